//! Reading the file sink's JSON lines back, and the event fields tests compare.

use serde_json::Value;

/// Every complete line of the JSON-lines file at `path` (none if it does not exist yet).
pub fn read_events(path: &std::path::Path) -> Vec<Value> {
    let s = match std::fs::read(path) {
        Ok(s) => s,
        Err(_) => return Vec::new(),
    };
    // only complete lines (the daemon may be mid-write)
    let end = s
        .iter()
        .rposition(|&b| b == b'\n')
        .map(|i| i + 1)
        .unwrap_or(0);
    s[..end]
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice(l).unwrap_or_else(|e| {
                panic!(
                    "bad JSON line ({e}): {}",
                    String::from_utf8_lossy(&l[..l.len().min(300)])
                )
            })
        })
        .collect()
}

/// As [`read_events`], skipping lines that are not JSON: the partial line a `kill -9` during
/// a write leaves (the file sink ends it with a newline at the next start, the event follows
/// again in full). Returns the events and how many lines were skipped.
pub fn read_events_after_crashes(path: &std::path::Path) -> (Vec<Value>, usize) {
    let s = std::fs::read(path).unwrap_or_default();
    let end = s
        .iter()
        .rposition(|&b| b == b'\n')
        .map(|i| i + 1)
        .unwrap_or(0);
    let mut torn = 0;
    let ev = s[..end]
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| match serde_json::from_slice(l) {
            Ok(v) => Some(v),
            Err(_) => {
                torn += 1;
                None
            }
        })
        .collect();
    (ev, torn)
}

/// An event's `(file, pos, row)`: the identity of a row change on one server.
pub type Coord = (String, u64, u64);

/// `(source.file, source.pos, source.row)` of an event.
pub fn coord(e: &Value) -> Coord {
    let s = &e["source"];
    (
        s["file"].as_str().unwrap().to_string(),
        s["pos"].as_u64().unwrap(),
        s["row"].as_u64().unwrap(),
    )
}

/// `(file, pos, row)` strictly increasing: each row change once, in binlog order.
pub fn assert_increasing(ev: &[Value]) {
    for w in ev.windows(2) {
        assert!(
            coord(&w[0]) < coord(&w[1]),
            "not increasing: {} then {}",
            w[0],
            w[1]
        );
    }
}

/// The `id` column of each event's `img` ("before" or "after") image.
pub fn ids(ev: &[Value], img: &str) -> Vec<i64> {
    ev.iter().map(|e| e[img]["id"].as_i64().unwrap()).collect()
}
