//! Binlog positions and GTID sets for both server flavours.
//!
//! * MySQL: a GTID set `uuid[:tag]:1-5:7,uuid2:1-3` (intervals inclusive), added to per transaction.
//! * MariaDB: a GTID position `domain-server-seq,…`: the last GTID per replication domain.

use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Where to start streaming when no position is stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StartPosition {
    /// The server's current end of binlog: only changes from now on.
    #[default]
    Latest,
    /// The oldest binlog the server still has.
    Earliest,
    File {
        file: String,
        pos: u64,
    },
    Gtid(String),
}

impl<'de> Deserialize<'de> for StartPosition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            File { file: String, pos: u64 },
            Gtid { gtid: String },
        }
        let bad = || {
            serde::de::Error::custom(
                "source.start must be \"latest\", \"earliest\", { file = \"binlog.000003\", pos = 4 } or { gtid = \"…\" }",
            )
        };
        match Raw::deserialize(d).map_err(|_| bad())? {
            Raw::Word(w) if w == "latest" => Ok(StartPosition::Latest),
            Raw::Word(w) if w == "earliest" => Ok(StartPosition::Earliest),
            Raw::Word(_) => Err(bad()),
            Raw::File { file, pos } => Ok(StartPosition::File { file, pos }),
            Raw::Gtid { gtid } => {
                GtidSet::parse_any(&gtid).map_err(serde::de::Error::custom)?;
                Ok(StartPosition::Gtid(gtid))
            }
        }
    }
}

/// A binlog coordinate: the byte offset in a binlog file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BinlogCoord {
    pub file: String,
    pub pos: u64,
}

impl fmt::Display for BinlogCoord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)
    }
}

impl FromStr for BinlogCoord {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (file, pos) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?} is not FILE:POS (e.g. binlog.000003:4)"))?;
        let pos = pos
            .parse()
            .map_err(|_| format!("{s:?}: position {pos:?} is not a number"))?;
        if file.is_empty() {
            return Err(format!("{s:?}: empty file name"));
        }
        Ok(BinlogCoord {
            file: file.to_string(),
            pos,
        })
    }
}

/// A GTID set of either flavour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GtidSet {
    MySql(MySqlGtidSet),
    MariaDb(MariaGtidPos),
}

impl GtidSet {
    /// Parses either syntax: MariaDB `d-s-n` lists, else MySQL `uuid:intervals`.
    pub fn parse_any(s: &str) -> Result<GtidSet, String> {
        let t = s.trim();
        if t.is_empty() {
            return Err("empty GTID set".into());
        }
        if t.contains(':') {
            MySqlGtidSet::from_str(t).map(GtidSet::MySql)
        } else {
            MariaGtidPos::from_str(t).map(GtidSet::MariaDb)
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            GtidSet::MySql(s) => s.sids.is_empty(),
            GtidSet::MariaDb(p) => p.domains.is_empty(),
        }
    }
}

impl fmt::Display for GtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GtidSet::MySql(s) => s.fmt(f),
            GtidSet::MariaDb(p) => p.fmt(f),
        }
    }
}

/// MySQL GTID set: per source id (`uuid` or `uuid:tag`), sorted disjoint inclusive intervals.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MySqlGtidSet {
    pub sids: BTreeMap<String, Vec<(u64, u64)>>,
}

impl MySqlGtidSet {
    /// Adds one transaction `sid:gno`.
    pub fn add(&mut self, sid: &str, gno: u64) {
        let iv = match self.sids.get_mut(sid) {
            Some(v) => v,
            None => self.sids.entry(sid.to_string()).or_default(),
        };
        add_interval(iv, gno, gno);
    }

    pub fn add_interval(&mut self, sid: &str, start: u64, end_incl: u64) {
        add_interval(
            self.sids.entry(sid.to_string()).or_default(),
            start,
            end_incl,
        );
    }

    pub fn contains(&self, sid: &str, gno: u64) -> bool {
        self.sids
            .get(sid)
            .is_some_and(|v| v.iter().any(|&(a, b)| a <= gno && gno <= b))
    }

    /// `true` when every GTID of `other` is in `self`.
    pub fn contains_set(&self, other: &MySqlGtidSet) -> bool {
        other.sids.iter().all(|(sid, ivs)| {
            let mine = self.sids.get(sid);
            ivs.iter()
                .all(|&(a, b)| mine.is_some_and(|m| m.iter().any(|&(x, y)| x <= a && b <= y)))
        })
    }

    /// The GTIDs of `self` that are not in `other`.
    pub fn subtract(&self, other: &MySqlGtidSet) -> MySqlGtidSet {
        let mut out = MySqlGtidSet::default();
        for (sid, ivs) in &self.sids {
            let theirs = other.sids.get(sid).map(Vec::as_slice).unwrap_or(&[]);
            let mut left: Vec<(u64, u64)> = Vec::new();
            for &(a, b) in ivs {
                // cut the interval [a, b] by every interval of `theirs` (sorted, disjoint)
                let mut from = a;
                for &(x, y) in theirs {
                    if y < from || x > b {
                        continue;
                    }
                    if x > from {
                        left.push((from, x - 1));
                    }
                    if y >= b {
                        from = b.saturating_add(1);
                        break;
                    }
                    from = y + 1;
                }
                if from <= b {
                    left.push((from, b));
                }
            }
            if !left.is_empty() {
                out.sids.insert(sid.clone(), left);
            }
        }
        out
    }

    /// The GTIDs in both sets.
    pub fn intersect(&self, other: &MySqlGtidSet) -> MySqlGtidSet {
        self.subtract(&self.subtract(other))
    }

    /// How many transactions the set holds.
    pub fn count(&self) -> u64 {
        self.sids
            .values()
            .flat_map(|v| v.iter())
            .map(|&(a, b)| b.saturating_sub(a).saturating_add(1))
            .fold(0u64, u64::saturating_add)
    }

    /// The highest GTID number of `sid` in the set that is below `gno` (0: none).
    pub fn last_below(&self, sid: &str, gno: u64) -> u64 {
        self.sids
            .get(sid)
            .map(|v| {
                v.iter()
                    .filter(|&&(a, _)| a < gno)
                    .map(|&(_, b)| b.min(gno - 1))
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    }

    /// The set as `Sid`s for COM_BINLOG_DUMP_GTID.
    pub fn to_sids(&self) -> Result<Vec<mysql_common::packets::Sid<'static>>, String> {
        self.sids
            .iter()
            .map(|(sid, ivs)| {
                let mut s = sid.clone();
                for (a, b) in ivs {
                    if a == b {
                        s.push_str(&format!(":{a}"));
                    } else {
                        s.push_str(&format!(":{a}-{b}"));
                    }
                }
                mysql_common::packets::Sid::from_str(&s).map_err(|e| format!("GTID {s:?}: {e}"))
            })
            .collect()
    }
}

fn add_interval(v: &mut Vec<(u64, u64)>, a: u64, b: u64) {
    // Fast path: extends the last interval (the common case in a stream).
    if let Some(last) = v.last_mut() {
        if last.1.checked_add(1) == Some(a) {
            last.1 = b;
            return;
        }
        if last.0 <= a && b <= last.1 {
            return;
        }
    }
    v.push((a, b));
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for &(x, y) in v.iter() {
        match out.last_mut() {
            Some(l) if x <= l.1.saturating_add(1) => l.1 = l.1.max(y),
            _ => out.push((x, y)),
        }
    }
    *v = out;
}

impl fmt::Display for MySqlGtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (sid, ivs) in &self.sids {
            if ivs.is_empty() {
                continue;
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            f.write_str(sid)?;
            for (a, b) in ivs {
                if a == b {
                    write!(f, ":{a}")?;
                } else {
                    write!(f, ":{a}-{b}")?;
                }
            }
        }
        Ok(())
    }
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

impl FromStr for MySqlGtidSet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut set = MySqlGtidSet::default();
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        if s.is_empty() {
            return Ok(set);
        }
        for part in s.split(',') {
            let mut it = part.split(':');
            let uuid = it.next().unwrap_or_default().to_ascii_lowercase();
            if !is_uuid(&uuid) {
                return Err(format!("{part:?} does not start with a server UUID"));
            }
            let mut sid = uuid.clone();
            let mut any = false;
            for piece in it {
                if piece
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
                {
                    sid = format!("{uuid}:{piece}");
                    continue;
                }
                let (a, b) = match piece.split_once('-') {
                    Some((a, b)) => (a, b),
                    None => (piece, piece),
                };
                let a: u64 = a
                    .parse()
                    .map_err(|_| format!("bad GTID interval {piece:?} in {part:?}"))?;
                let b: u64 = b
                    .parse()
                    .map_err(|_| format!("bad GTID interval {piece:?} in {part:?}"))?;
                if a == 0 || b < a {
                    return Err(format!("bad GTID interval {piece:?} in {part:?}"));
                }
                set.add_interval(&sid, a, b);
                any = true;
            }
            if !any {
                return Err(format!("{part:?} has no GTID interval"));
            }
        }
        Ok(set)
    }
}

/// MariaDB GTID position: the last `server-seq` applied per domain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MariaGtidPos {
    pub domains: BTreeMap<u32, (u32, u64)>,
}

impl MariaGtidPos {
    pub fn set(&mut self, domain: u32, server: u32, seq: u64) {
        self.domains.insert(domain, (server, seq));
    }

    /// `true` when for every domain of `other` this position is at or past it.
    pub fn covers(&self, other: &MariaGtidPos) -> bool {
        other
            .domains
            .iter()
            .all(|(d, (_, seq))| self.domains.get(d).is_some_and(|(_, s)| s >= seq))
    }
}

impl fmt::Display for MariaGtidPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (d, (s, n)) in &self.domains {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{d}-{s}-{n}")?;
        }
        Ok(())
    }
}

impl FromStr for MariaGtidPos {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut p = MariaGtidPos::default();
        for part in s.split(',').map(str::trim).filter(|x| !x.is_empty()) {
            let nums: Vec<&str> = part.split('-').collect();
            let bad =
                || format!("{part:?} is not a MariaDB GTID (domain-server-sequence, e.g. 0-1-42)");
            if nums.len() != 3 {
                return Err(bad());
            }
            let d: u32 = nums[0].parse().map_err(|_| bad())?;
            let sv: u32 = nums[1].parse().map_err(|_| bad())?;
            let n: u64 = nums[2].parse().map_err(|_| bad())?;
            if p.domains.insert(d, (sv, n)).is_some() {
                return Err(format!("domain {d} appears twice in {s:?}"));
            }
        }
        Ok(p)
    }
}

/// The position of the stream after a complete transaction: where to resume from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub coord: BinlogCoord,
    /// GTID state including this transaction (None when the server runs without GTIDs or it is
    /// not known yet).
    pub gtid: Option<GtidSet>,
    /// While XA transactions are prepared but not yet committed or rolled back: where reading
    /// must restart so that their PREPARE groups (which hold their rows) are read again. A
    /// restart reads from here and hands on nothing up to `coord`/`gtid` (already acknowledged).
    pub restart: Option<Box<Position>>,
}

impl Position {
    pub fn new(coord: BinlogCoord, gtid: Option<GtidSet>) -> Position {
        Position {
            coord,
            gtid,
            restart: None,
        }
    }
}

/// A binlog file name's base and sequence number (`binlog.000042` → (`binlog`, 42)), for
/// ordering coordinates across files; names without a numeric suffix give 0.
pub fn file_seq(file: &str) -> (&str, u64) {
    match file.rsplit_once('.') {
        Some((base, n)) => (base, n.parse().unwrap_or(0)),
        None => (file, 0),
    }
}

/// `a` is at or before `b` in the binlog of one server.
pub fn coord_le(a_file: &str, a_pos: u64, b: &BinlogCoord) -> bool {
    (file_seq(a_file).1, a_pos) <= (file_seq(&b.file).1, b.pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_set_roundtrip_and_add() {
        let u = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        let mut s: MySqlGtidSet = format!("{u}:1-5:7").parse().unwrap();
        s.add(u, 6);
        assert_eq!(s.to_string(), format!("{u}:1-7"));
        s.add(u, 9);
        assert_eq!(s.to_string(), format!("{u}:1-7:9"));
        assert!(s.contains(u, 3) && !s.contains(u, 8));
        let t: MySqlGtidSet = format!("{u}:tag_a:1-3,{u}:2").parse().unwrap();
        assert_eq!(t.to_string(), format!("{u}:2,{u}:tag_a:1-3"));
        assert_eq!(t.to_sids().unwrap().len(), 2);
        assert!(MySqlGtidSet::from_str("nope:1").is_err());
        assert!(MySqlGtidSet::from_str(&format!("{u}:5-2")).is_err());
    }

    #[test]
    fn mysql_set_algebra() {
        let u = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        let v = "4e11fa47-71ca-11e1-9e33-c80aa9429562";
        let s: MySqlGtidSet = format!("{u}:1-600,{v}:1-3").parse().unwrap();
        let e: MySqlGtidSet = format!("{u}:1-300:400-450,{v}:1-10").parse().unwrap();
        let d = s.subtract(&e);
        assert_eq!(d.to_string(), format!("{u}:301-399:451-600"));
        assert_eq!(d.count(), 99 + 150);
        assert_eq!(
            s.intersect(&e).to_string(),
            format!("{u}:1-300:400-450,{v}:1-3")
        );
        assert!(e.subtract(&e).sids.is_empty());
        assert_eq!(e.last_below(u, 420), 419);
        assert_eq!(e.last_below(u, 350), 300);
        assert_eq!(e.last_below(u, 1), 0);
        assert_eq!(e.last_below(v, 1000), 10);
    }

    #[test]
    fn maria_pos() {
        let mut p: MariaGtidPos = "0-1-12, 3-2-5".parse().unwrap();
        p.set(0, 1, 13);
        assert_eq!(p.to_string(), "0-1-13,3-2-5");
        assert!(p.covers(&"0-1-12".parse().unwrap()));
        assert!(!p.covers(&"1-1-1".parse().unwrap()));
        assert!(MariaGtidPos::from_str("0-1").is_err());
        assert!(matches!(
            GtidSet::parse_any("0-1-2").unwrap(),
            GtidSet::MariaDb(_)
        ));
    }

    #[test]
    fn coord_parse() {
        let c: BinlogCoord = "binlog.000003:1234".parse().unwrap();
        assert_eq!(c.pos, 1234);
        assert!("binlog.000003".parse::<BinlogCoord>().is_err());
    }
}
