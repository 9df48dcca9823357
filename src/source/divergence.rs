//! Divergence: does the source server's history contain everything binlogd already handed to
//! the sinks?
//!
//! After a failover to a replica that was behind the old primary, the new primary lacks the
//! old primary's last transactions, yet binlogd (and its sinks) already have them. Resuming
//! would mix two histories silently: MySQL streams whatever the new primary has beyond the
//! stored GTID set, and MariaDB's new primary reuses the domain's sequence numbers for its own
//! transactions. So before streaming, what was delivered (the stored GTID set, and with Kafka
//! `exactly_once` the GTIDs at the partition tails) must be contained in the server's history:
//!
//! * MySQL: in `@@GLOBAL.gtid_executed` (a GTID set: `GTID_SUBSET(delivered, executed)`);
//! * MariaDB: every delivered `domain-server-seq` must be covered by the server's binlog state
//!   (`@@GLOBAL.gtid_binlog_state`, the last sequence number per domain *and server id*) for the
//!   same server id. A higher sequence number from another server id in that domain means the
//!   server wrote its own transactions where the delivered ones were.

use mysql_async::prelude::*;
use mysql_async::Conn;
use std::collections::BTreeMap;
use std::fmt;
use thiserror::Error;

use crate::binlog::position::{GtidSet, MariaGtidPos, MySqlGtidSet};
use crate::binlog::Flavor;

/// Who a source server is: its `server_id` and (MySQL) `server_uuid`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    pub server_id: u32,
    pub server_uuid: Option<String>,
}

impl Identity {
    /// `true` when `other` is (as far as the two tell) another server.
    pub fn differs(&self, other: &Identity) -> bool {
        match (&self.server_uuid, &other.server_uuid) {
            (Some(a), Some(b)) => a != b || self.server_id != other.server_id,
            _ => self.server_id != other.server_id,
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "server_id {}", self.server_id)?;
        if let Some(u) = &self.server_uuid {
            write!(f, ", server_uuid {u}")?;
        }
        Ok(())
    }
}

/// MariaDB `@@gtid_binlog_state`: the last sequence number per (domain, server id).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MariaState {
    pub last: BTreeMap<(u32, u32), u64>,
}

impl std::str::FromStr for MariaState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut st = MariaState::default();
        for part in s.split(',').map(str::trim).filter(|x| !x.is_empty()) {
            // each element is one GTID: parse it as a one-domain position
            let one: MariaGtidPos = part.parse()?;
            for (d, (sv, n)) in one.domains {
                let e = st.last.entry((d, sv)).or_insert(n);
                *e = (*e).max(n);
            }
        }
        Ok(st)
    }
}

impl fmt::Display for MariaState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .last
            .iter()
            .map(|((d, s), n)| format!("{d}-{s}-{n}"))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// A server's transaction history as far as divergence detection needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum History {
    /// `@@GLOBAL.gtid_executed`.
    MySql(MySqlGtidSet),
    /// `@@GLOBAL.gtid_binlog_state`.
    MariaDb(MariaState),
}

impl fmt::Display for History {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            History::MySql(s) => write!(f, "gtid_executed {s}"),
            History::MariaDb(s) => write!(f, "gtid_binlog_state {s}"),
        }
    }
}

#[derive(Debug, Error)]
pub enum HistoryError {
    #[error("reading the server's GTID history: {0}")]
    Mysql(#[from] mysql_async::Error),
    #[error("the server's GTID history {0:?} is unreadable: {1}")]
    Unreadable(String, String),
}

/// Reads the server's history (a MySQL server without GTIDs has an empty `gtid_executed`).
pub async fn read_history(conn: &mut Conn, flavor: Flavor) -> Result<History, HistoryError> {
    let q = match flavor {
        Flavor::MySql => "SELECT CAST(@@GLOBAL.gtid_executed AS CHAR)",
        Flavor::MariaDb => "SELECT CAST(@@GLOBAL.gtid_binlog_state AS CHAR)",
    };
    let text: Option<Option<String>> = conn.query_first(q).await?;
    let text = text.flatten().unwrap_or_default();
    let bad = |e: String| HistoryError::Unreadable(text.clone(), e);
    Ok(match flavor {
        Flavor::MySql => History::MySql(text.parse().map_err(bad)?),
        Flavor::MariaDb => History::MariaDb(text.parse().map_err(bad)?),
    })
}

/// Reads the server's identity.
pub async fn read_identity(conn: &mut Conn, flavor: Flavor) -> Result<Identity, HistoryError> {
    let q = match flavor {
        Flavor::MySql => "SELECT @@GLOBAL.server_id, CAST(@@GLOBAL.server_uuid AS CHAR)",
        Flavor::MariaDb => "SELECT @@GLOBAL.server_id, NULL",
    };
    let row: Option<(Option<u32>, Option<String>)> = conn.query_first(q).await?;
    let (id, uuid) = row.unwrap_or_default();
    Ok(Identity {
        server_id: id.unwrap_or(0),
        server_uuid: uuid,
    })
}

pub use crate::binlog::Tail;

/// What was handed to the sinks and is missing from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lacking {
    /// Transactions missing (MariaDB: at most this many; sequence numbers can be shared with
    /// other server ids).
    pub count: u64,
    /// The missing GTIDs: a MySQL GTID set, or MariaDB `d-s-a … d-s-b` ranges.
    pub ranges: String,
    /// What the server has in their place (MariaDB: its own transactions with those sequence
    /// numbers), if anything.
    pub instead: Option<String>,
    /// Where binlogd learned that they were delivered.
    pub evidence: Vec<String>,
}

/// The part of what was delivered (`stored`, the Kafka `tails`) that the server's history
/// lacks; `None` when everything is contained.
pub fn lacking(stored: Option<(&GtidSet, &str)>, tails: &[Tail], h: &History) -> Option<Lacking> {
    let mut evidence = Vec::new();
    match h {
        History::MySql(executed) => {
            let mut missing = match stored {
                Some((GtidSet::MySql(s), _)) => s.subtract(executed),
                _ => MySqlGtidSet::default(),
            };
            if let (false, Some((_, what))) = (missing.sids.is_empty(), stored) {
                evidence.push(what.to_string());
            }
            for t in tails {
                let Some((sid, gno)) = t.gtid.rsplit_once(':') else {
                    continue;
                };
                let (sid, Ok(gno)) = (sid.to_ascii_lowercase(), gno.parse::<u64>()) else {
                    continue;
                };
                if gno == 0 || executed.contains(&sid, gno) {
                    continue;
                }
                // everything of that source between what the server has and the tail was
                // handed on before it
                missing.add_interval(&sid, executed.last_below(&sid, gno) + 1, gno);
                evidence.push(format!(
                    "Kafka {}/{} (last message {})",
                    t.topic, t.partition, t.gtid
                ));
            }
            (!missing.sids.is_empty()).then(|| Lacking {
                count: missing.count(),
                ranges: missing.to_string(),
                instead: None,
                evidence,
            })
        }
        History::MariaDb(state) => {
            // every delivered sequence number per (domain, server id), with its evidence
            let mut need: BTreeMap<(u32, u32), Vec<(u64, String)>> = BTreeMap::new();
            if let Some((GtidSet::MariaDb(p), what)) = stored {
                for (d, (s, n)) in &p.domains {
                    need.entry((*d, *s))
                        .or_default()
                        .push((*n, what.to_string()));
                }
            }
            for t in tails {
                let Ok(p) = t.gtid.parse::<MariaGtidPos>() else {
                    continue;
                };
                for (d, (s, n)) in p.domains {
                    need.entry((d, s)).or_default().push((
                        n,
                        format!(
                            "Kafka {}/{} (last message {})",
                            t.topic, t.partition, t.gtid
                        ),
                    ));
                }
            }
            let mut count = 0u64;
            let mut ranges = Vec::new();
            let mut instead = Vec::new();
            for ((d, s), items) in need {
                let have = state.last.get(&(d, s)).copied();
                let n = items.iter().map(|(n, _)| *n).max().unwrap_or(0);
                if n == 0 || have.is_some_and(|m| m >= n) {
                    continue;
                }
                let from = have.map_or(1, |m| m + 1);
                count = count.saturating_add(n - from + 1);
                ranges.push(if from == n {
                    format!("{d}-{s}-{n}")
                } else {
                    format!("{d}-{s}-{from} … {d}-{s}-{n}")
                });
                for ((d2, s2), m) in &state.last {
                    if *d2 == d && *s2 != s && *m >= from {
                        instead.push(format!("{d2}-{s2}-{m}"));
                    }
                }
                // only what the server lacks is evidence
                for (k, e) in items {
                    if have.is_none_or(|m| k > m) && !evidence.contains(&e) {
                        evidence.push(e);
                    }
                }
            }
            (count > 0).then(|| Lacking {
                count,
                ranges: ranges.join(", "),
                instead: (!instead.is_empty()).then(|| instead.join(", ")),
                evidence,
            })
        }
    }
}

/// Where to resume when the operator accepts a divergence: the part of the stored position the
/// server's history contains (MySQL: the intersection with `gtid_executed`; MariaDB: per
/// domain, the last GTID of the stored server id the server has). The server then streams
/// everything of its own history after it.
pub fn common(stored: &GtidSet, h: &History) -> Result<GtidSet, String> {
    match (stored, h) {
        (GtidSet::MySql(s), History::MySql(e)) => Ok(GtidSet::MySql(s.intersect(e))),
        (GtidSet::MariaDb(p), History::MariaDb(state)) => {
            let mut out = MariaGtidPos::default();
            for (d, (s, n)) in &p.domains {
                match state.last.get(&(*d, *s)) {
                    Some(m) => out.set(*d, *s, (*m).min(*n)),
                    None => {
                        return Err(format!(
                            "the server has no transaction of server id {s} in domain {d}, so there is no common point \
                             to resume from in that domain; choose one with `binlogd position set --gtid …`"
                        ))
                    }
                }
            }
            Ok(GtidSet::MariaDb(out))
        }
        _ => Err("the stored GTID set and the server are of different kinds".into()),
    }
}

/// The source server lacks transactions binlogd already handed to the sinks.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "history diverged: the source server ({server}) lacks {count} transaction(s) that binlogd already handed to the sinks: \
     {ranges} (known from {evidence}){instead}. This happens after a failover to a replica that was behind the old \
     primary: it never received them, and the sinks hold changes the new primary does not have. Nothing was streamed \
     from this server. Choose: accept the divergence and stream the new primary's history after the last transaction \
     both share — `binlogd run --accept-divergence` (once), or `binlogd position set --gtid '{accept}'` — then re-read \
     the affected tables into the sinks; or apply the missing transactions to this server (from the old primary's \
     binlogs) and start again",
    count = lacking.count,
    ranges = lacking.ranges,
    evidence = lacking.evidence.join(", "),
    instead = lacking.instead.as_ref().map(|i| format!("; in their place it has its own transactions up to {i}")).unwrap_or_default(),
)]
pub struct Diverged {
    pub server: Identity,
    pub lacking: Lacking,
    /// The GTID set `--accept-divergence` would resume from (or why there is none).
    pub accept: String,
}

/// Checks `stored` (what was delivered; `what` names it in the error) and the Kafka `tails`
/// against the server's history.
pub fn check(
    stored: Option<&GtidSet>,
    what: &str,
    tails: &[Tail],
    history: &History,
    server: &Identity,
) -> Result<(), Box<Diverged>> {
    match lacking(stored.map(|s| (s, what)), tails, history) {
        None => Ok(()),
        Some(l) => Err(Box::new(Diverged {
            server: server.clone(),
            accept: match stored.map(|s| common(s, history)) {
                Some(Ok(g)) => g.to_string(),
                Some(Err(e)) => format!("<none: {e}>"),
                None => "<the GTIDs the server has>".into(),
            },
            lacking: l,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    const R: &str = "4e11fa47-71ca-11e1-9e33-c80aa9429562";
    const SP: &str = "the stored position";

    fn tail(g: &str) -> Tail {
        Tail {
            topic: "t".into(),
            partition: 1,
            gtid: g.into(),
            server: "p".into(),
        }
    }

    #[test]
    fn mysql_contained_and_lacking() {
        let e = History::MySql(format!("{P}:1-300,{R}:1-20").parse().unwrap());
        let ok = GtidSet::parse_any(&format!("{P}:1-300")).unwrap();
        assert!(lacking(Some((&ok, SP)), &[tail(&format!("{P}:299"))], &e).is_none());
        let s = GtidSet::parse_any(&format!("{P}:1-600")).unwrap();
        let l = lacking(Some((&s, SP)), &[], &e).unwrap();
        assert_eq!(l.count, 300);
        assert_eq!(l.ranges, format!("{P}:301-600"));
        assert_eq!(common(&s, &e).unwrap().to_string(), format!("{P}:1-300"));
        // the checkpoint lagged, the Kafka tails did not
        let stale = GtidSet::parse_any(&format!("{P}:1-250")).unwrap();
        let l = lacking(Some((&stale, SP)), &[tail(&format!("{P}:598"))], &e).unwrap();
        assert_eq!(l.ranges, format!("{P}:301-598"));
        assert_eq!(l.count, 298);
        assert!(l.evidence[0].contains("Kafka t/1"), "{:?}", l.evidence);
        let err = check(Some(&s), SP, &[], &e, &Identity::default()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("lacks 300 transaction(s)"), "{msg}");
        assert!(
            msg.contains(&format!("position set --gtid '{P}:1-300'")),
            "{msg}"
        );
        assert!(
            msg.contains("--accept-divergence") && msg.contains("behind"),
            "{msg}"
        );
        assert!(!msg.contains("purged"), "{msg}");
    }

    #[test]
    fn mariadb_state_and_divergence() {
        let st: MariaState = "0-1-5,0-2-7,1-1-3".parse().unwrap();
        assert_eq!(st.last.get(&(0, 2)), Some(&7));
        assert_eq!(st.to_string(), "0-1-5,0-2-7,1-1-3");
        let h = History::MariaDb(st);
        // caught up: the new primary has 0-1-5 and continued with its own
        let ok = GtidSet::parse_any("0-1-5,1-1-3").unwrap();
        assert!(lacking(Some((&ok, SP)), &[], &h).is_none());
        // behind: 0-1-6..8 were delivered; the server wrote 0-2-6, 0-2-7 instead
        let s = GtidSet::parse_any("0-1-8,1-1-3").unwrap();
        let l = lacking(Some((&s, SP)), &[], &h).unwrap();
        assert_eq!(l.count, 3);
        assert_eq!(l.ranges, "0-1-6 … 0-1-8");
        assert_eq!(l.instead.as_deref(), Some("0-2-7"));
        assert_eq!(common(&s, &h).unwrap().to_string(), "0-1-5,1-1-3");
        // a Kafka tail ahead of a stale checkpoint
        let l = lacking(Some((&ok, SP)), &[tail("0-1-9")], &h).unwrap();
        assert_eq!((l.count, l.ranges.as_str()), (4, "0-1-6 … 0-1-9"));
        assert_eq!(
            l.evidence,
            vec!["Kafka t/1 (last message 0-1-9)".to_string()]
        );
        // sequence number 0: nothing delivered in that domain
        assert!(lacking(Some((&GtidSet::parse_any("7-1-0").unwrap(), SP)), &[], &h).is_none());
        // a domain the server never had
        let s2 = GtidSet::parse_any("5-1-2").unwrap();
        assert_eq!(lacking(Some((&s2, SP)), &[], &h).unwrap().count, 2);
        assert!(common(&s2, &h).is_err());
        assert!("0-1".parse::<MariaState>().is_err());
        assert_eq!("".parse::<MariaState>().unwrap(), MariaState::default());
    }

    #[test]
    fn identities() {
        let a = Identity {
            server_id: 1,
            server_uuid: Some(P.into()),
        };
        let b = Identity {
            server_id: 1,
            server_uuid: Some(R.into()),
        };
        assert!(a.differs(&b));
        assert!(!a.differs(&a.clone()));
        let m1 = Identity {
            server_id: 1,
            server_uuid: None,
        };
        assert!(!m1.differs(&a), "uuid unknown: compared by server_id");
        assert_eq!(a.to_string(), format!("server_id 1, server_uuid {P}"));
    }
}
