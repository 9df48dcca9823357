//! The per-row history check of the fault and failover suites: the events of `db.t` (columns
//! `id`, `v`), de-duplicated by a key, must form an unbroken history of every row — each insert
//! of a new id, each update's and delete's before image equal to the row as the previous event
//! left it. A lost or reordered row change breaks the chain (and a break can never heal: it
//! fails at once).

use super::events::coord;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::hash::Hash;

/// Where a history check ends: the state (id → v), the distinct row changes and the repeats.
pub type History = (BTreeMap<i64, i64>, usize, usize);

/// Checks `outputs` (each one daemon's events in its order) form an unbroken history, a row
/// change identified by `keys` (one key per event of an output): a key seen before is a
/// repeat and skipped.
pub fn check_history_by<K: Eq + Hash>(
    outputs: &[Vec<Value>],
    keys: impl Fn(&[Value]) -> Vec<K>,
) -> History {
    let mut seen = HashSet::new();
    let mut state: BTreeMap<i64, i64> = BTreeMap::new();
    let mut repeats = 0;
    for events in outputs {
        for (i, (e, k)) in events.iter().zip(keys(events)).enumerate() {
            if !seen.insert(k) {
                repeats += 1;
                continue;
            }
            let img = |side: &str| -> (i64, i64) {
                (
                    e[side]["id"].as_i64().unwrap_or(-1),
                    e[side]["v"].as_i64().unwrap_or(-1),
                )
            };
            match e["op"].as_str() {
                Some("c") => {
                    let (id, v) = img("after");
                    assert!(
                        state.insert(id, v).is_none(),
                        "event {i}: insert of id {id} that already exists: {e}"
                    );
                }
                Some("u") => {
                    let (id, v0) = img("before");
                    let (id1, v1) = img("after");
                    assert_eq!(id, id1);
                    assert_eq!(
                        state.get(&id),
                        Some(&v0),
                        "event {i}: update of id {id} from v={v0}, but the history says {:?} (a row change was lost or reordered): {e}",
                        state.get(&id)
                    );
                    state.insert(id, v1);
                }
                Some("d") => {
                    let (id, v0) = img("before");
                    assert_eq!(
                        state.remove(&id),
                        Some(v0),
                        "event {i}: delete of id {id} v={v0} does not match the history: {e}"
                    );
                }
                other => panic!("event {i}: unexpected op {other:?}: {e}"),
            }
        }
    }
    (state, seen.len(), repeats)
}

/// One server's events, a row change identified by `(file, pos, row)`.
pub fn check_history(events: Vec<Value>) -> History {
    let keys = |ev: &[Value]| ev.iter().map(coord).collect::<Vec<_>>();
    check_history_by(&[events], keys)
}

/// A row change's identity across servers: its transaction's GTID and its index in the
/// transaction (a transaction streamed twice gives the same keys; coordinates differ between
/// servers, GTIDs do not).
pub fn gtid_keys(events: &[Value]) -> Vec<(String, usize)> {
    let mut out = Vec::with_capacity(events.len());
    let mut cur = String::new();
    let mut idx = 0usize;
    for e in events {
        let g = e["source"]["gtid"].as_str().unwrap_or("").to_string();
        if g == cur {
            idx += 1;
        } else {
            cur = g.clone();
            idx = 0;
        }
        out.push((g, idx));
    }
    out
}

/// Several daemons' outputs (across a failover), a row change identified by [`gtid_keys`].
pub fn check_history_across(outputs: &[Vec<Value>]) -> History {
    check_history_by(outputs, gtid_keys)
}
