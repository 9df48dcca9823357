//! Snapshot progress, stored with the position in the checkpoint row: per table the last key
//! emitted (typed, lossless: it is bound into the next chunk query as it came from SELECT), the
//! rows emitted, the chunks, and whether the table is done. Serialised as a compact JSON
//! string with a version field:
//!
//! ```json
//! {"v":1,"tables":[{"db":"shop","t":"orders","k":[{"i":42},{"b":"616263"}],"r":8192,"c":2,"done":false}]}
//! ```
//!
//! Key values: `{"i":-5}` signed, `{"u":5}` unsigned, `{"f":bits}` FLOAT and `{"d":bits}`
//! DOUBLE (IEEE bits, exact), `{"b":"hex"}` bytes (strings, DECIMAL text, UUID text),
//! `{"dt":[y,m,d,h,mi,s,us]}` DATE/DATETIME/TIMESTAMP, `{"tm":[neg,days,h,mi,s,us]}` TIME,
//! `"n"` NULL.

use mysql_async::Value;
use serde::{Deserialize, Serialize};

use super::SnapshotError;

pub const PROGRESS_VERSION: u32 = 1;

/// One key column's value, as SELECT returned it (see the module docs for the JSON form).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum KeyValue {
    #[serde(rename = "n")]
    Null,
    #[serde(rename = "i")]
    Int(i64),
    #[serde(rename = "u")]
    UInt(u64),
    #[serde(rename = "f")]
    Float(u32),
    #[serde(rename = "d")]
    Double(u64),
    #[serde(rename = "b", with = "hex")]
    Bytes(Vec<u8>),
    #[serde(rename = "dt")]
    Date(u16, u8, u8, u8, u8, u8, u32),
    #[serde(rename = "tm")]
    Time(bool, u32, u8, u8, u8, u32),
}

mod hex {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        const H: &[u8; 16] = b"0123456789abcdef";
        let mut t = String::with_capacity(b.len() * 2);
        for x in b {
            t.push(H[(x >> 4) as usize] as char);
            t.push(H[(x & 15) as usize] as char);
        }
        s.serialize_str(&t)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        super::unhex(&s).ok_or_else(|| serde::de::Error::custom("bad hex in key value"))
    }
}

pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    let n = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    b.chunks(2)
        .map(|p| Some(n(p[0])? << 4 | n(p[1])?))
        .collect()
}

pub(crate) fn hex_string(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

impl KeyValue {
    pub fn from_value(v: &Value) -> KeyValue {
        match v {
            Value::NULL => KeyValue::Null,
            Value::Int(i) => KeyValue::Int(*i),
            Value::UInt(u) => KeyValue::UInt(*u),
            Value::Float(f) => KeyValue::Float(f.to_bits()),
            Value::Double(d) => KeyValue::Double(d.to_bits()),
            Value::Bytes(b) => KeyValue::Bytes(b.clone()),
            Value::Date(y, m, d, h, mi, s, us) => KeyValue::Date(*y, *m, *d, *h, *mi, *s, *us),
            Value::Time(n, d, h, mi, s, us) => KeyValue::Time(*n, *d, *h, *mi, *s, *us),
        }
    }

    pub fn to_value(&self) -> Value {
        match self {
            KeyValue::Null => Value::NULL,
            KeyValue::Int(i) => Value::Int(*i),
            KeyValue::UInt(u) => Value::UInt(*u),
            KeyValue::Float(f) => Value::Float(f32::from_bits(*f)),
            KeyValue::Double(d) => Value::Double(f64::from_bits(*d)),
            KeyValue::Bytes(b) => Value::Bytes(b.clone()),
            KeyValue::Date(y, m, d, h, mi, s, us) => Value::Date(*y, *m, *d, *h, *mi, *s, *us),
            KeyValue::Time(n, d, h, mi, s, us) => Value::Time(*n, *d, *h, *mi, *s, *us),
        }
    }
}

/// A number for a new snapshot run of a table (time-based, distinct per call).
pub fn new_run() -> u64 {
    static LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let prev = LAST.fetch_max(now, std::sync::atomic::Ordering::Relaxed);
    if prev >= now {
        LAST.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
    } else {
        now
    }
}

/// One table's progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableProgress {
    pub db: String,
    #[serde(rename = "t")]
    pub table: String,
    /// The key of the last row of the last emitted chunk (None: nothing read yet).
    #[serde(rename = "k", default, skip_serializing_if = "Option::is_none")]
    pub last_key: Option<Vec<KeyValue>>,
    /// The columns of the key the table is read by (a `last_key` continues only in it).
    #[serde(rename = "kn", default, skip_serializing_if = "Vec::is_empty")]
    pub key_names: Vec<String>,
    /// Rows emitted (after dropping those the stream changed while their chunk was open).
    #[serde(rename = "r")]
    pub rows: u64,
    #[serde(rename = "c")]
    pub chunks: u64,
    pub done: bool,
    /// `binlogd snapshot cancel` ended it before it was done, or the table was dropped or
    /// renamed while it was read.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancelled: bool,
    /// The `--where` condition of an on-demand snapshot.
    #[serde(rename = "w", default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Rows the server estimated when the table's snapshot began (progress and ETA only).
    #[serde(rename = "e", default)]
    pub estimate: u64,
    /// This run of the table's snapshot (a new number each time it is started): tells a
    /// restarted snapshot's read events from an earlier one's.
    #[serde(rename = "n", default)]
    pub run: u64,
}

impl TableProgress {
    pub fn new(db: &str, table: &str) -> TableProgress {
        TableProgress {
            db: db.into(),
            table: table.into(),
            last_key: None,
            key_names: Vec::new(),
            rows: 0,
            chunks: 0,
            done: false,
            cancelled: false,
            filter: None,
            estimate: 0,
            run: new_run(),
        }
    }

    /// Still to be read.
    pub fn pending(&self) -> bool {
        !self.done && !self.cancelled
    }

    /// Records an emitted chunk: `last_key` None (an empty chunk) marks the table done.
    pub fn chunk_emitted(&mut self, last_key: Option<Vec<KeyValue>>, rows: u64) {
        self.chunks += 1;
        self.rows += rows;
        match last_key {
            Some(k) => self.last_key = Some(k),
            None => self.done = true,
        }
    }
}

/// The progress of every table of a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotProgress {
    pub v: u32,
    pub tables: Vec<TableProgress>,
    /// The stream position the last chunk was handed on at (binlog file, pos): a chunk handed
    /// on after it but not stored (a crash) was handed on at or after it, even when the stored
    /// position has moved on since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<(String, u64)>,
}

impl Default for SnapshotProgress {
    fn default() -> Self {
        SnapshotProgress {
            v: PROGRESS_VERSION,
            tables: Vec::new(),
            at: None,
        }
    }
}

impl SnapshotProgress {
    pub fn to_json(&self) -> String {
        // (derive-generated Serialize of plain data: cannot fail)
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(s: &str) -> Result<SnapshotProgress, SnapshotError> {
        #[derive(Deserialize)]
        struct Version {
            v: u32,
        }
        let v: Version = serde_json::from_str(s)
            .map_err(|e| SnapshotError::Progress(format!("no version field: {e}")))?;
        if v.v != PROGRESS_VERSION {
            return Err(SnapshotError::Progress(format!(
                "stored progress has version {}, this binlogd reads version {PROGRESS_VERSION}",
                v.v
            )));
        }
        serde_json::from_str(s).map_err(|e| SnapshotError::Progress(e.to_string()))
    }

    pub fn table_mut(&mut self, db: &str, table: &str) -> &mut TableProgress {
        let i = match self
            .tables
            .iter()
            .position(|t| t.db == db && t.table == table)
        {
            Some(i) => i,
            None => {
                self.tables.push(TableProgress::new(db, table));
                self.tables.len() - 1
            }
        };
        &mut self.tables[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_key_type() {
        let mut p = SnapshotProgress::default();
        p.table_mut("shop", "orders").chunk_emitted(
            Some(vec![
                KeyValue::Int(-5),
                KeyValue::UInt(u64::MAX),
                KeyValue::Float(0.1f32.to_bits()),
                KeyValue::Double((-0.0f64).to_bits()),
                KeyValue::Bytes(vec![0, 0xff, b'"', 0xc3]),
                KeyValue::Date(2024, 2, 29, 23, 59, 59, 999_999),
                KeyValue::Time(true, 34, 22, 59, 59, 1),
                KeyValue::Null,
            ]),
            1024,
        );
        let t = p.table_mut("d.x", "t`y");
        t.chunk_emitted(None, 0);
        let s = p.to_json();
        assert!(s.starts_with("{\"v\":1,"), "{s}");
        let back = SnapshotProgress::from_json(&s).unwrap();
        assert_eq!(back, p);
        // the values bind exactly as they came
        let k = back.tables[0].last_key.as_ref().unwrap();
        assert_eq!(k[2].to_value(), Value::Float(0.1));
        assert!(matches!(k[3].to_value(), Value::Double(d) if d.to_bits() == (-0.0f64).to_bits()));
        assert_eq!(k[4].to_value(), Value::Bytes(vec![0, 0xff, b'"', 0xc3]));
        assert!(back.tables[1].done && back.tables[1].last_key.is_none());
        assert_eq!(back.tables[0].rows, 1024);
        assert_eq!(back.tables[0].chunks, 1);
        for v in [
            Value::Int(1),
            Value::Bytes(b"abc".to_vec()),
            Value::Date(0, 0, 0, 0, 0, 0, 0),
            Value::Time(false, 0, 1, 2, 3, 4),
        ] {
            assert_eq!(KeyValue::from_value(&v).to_value(), v);
        }
    }

    #[test]
    fn version_is_checked() {
        let e = SnapshotProgress::from_json("{\"v\":2,\"tables\":[]}").unwrap_err();
        assert!(e.to_string().contains("version 2"), "{e}");
        assert!(SnapshotProgress::from_json("{}").is_err());
        assert!(SnapshotProgress::from_json("{\"v\":1,\"tables\":[{\"db\":\"a\"}]}").is_err());
    }
}
