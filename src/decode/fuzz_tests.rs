//! Property tests of everything that parses bytes the server controls: MariaDB events (GTID,
//! GTID_LIST, QUERY_COMPRESSED), compressed rows, rows-event headers, row images, value
//! rendering (DECIMAL, temporal types, strings, binary JSON), MySQL partial JSON diffs,
//! charsets, and binlog files (framing + CRC32) through the whole [`Decoder`].
//!
//! Every parser gets arbitrary bytes and mutations of valid encodings built here (truncation at
//! every length, bit flips, overwritten bytes, huge length prefixes). The properties: it
//! returns `Ok` or `Err`, never panics, never loops forever, and never makes one allocation
//! larger than [`ALLOC_LIMIT`] (a test allocator records the largest request per thread).
//! Where natural, encodings round-trip (DECIMAL, GTID_LIST, compressed payloads).
//!
//! Run: `cargo test --release --lib fuzz_tests` (`PROPTEST_CASES=n` scales every property).

use proptest::collection::vec;
use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::sync::Arc;

use super::charset::{transcode_into, CollationMap, TextEncoding};
use super::mariadb;
use super::rows::{self, RowsEventKind};
use super::table::{ColKind, ColumnSchema, HintColumn, SchemaHints, SpecialType};
use super::value::{check_value, decimal_to_string, mysql_json_value, push_value, push_value_in};
use super::{jsondiff, DecodeError, Decoder, Step};
use crate::binlog::event_type as et;
use crate::binlog::Flavor;
use crate::decode::event::SourceInfo;
use crate::filter::TableFilter;
use crate::source::binlog_file::BinlogFileReader;

// ---------------------------------------------------------------------------------------------
// The allocation guard: the largest single allocation request made by this thread.

struct Recording;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

thread_local! {
    /// Set inside [`bounded`]: an allocation over the limit fails there and then (the process
    /// aborts with "memory allocation of N bytes failed") instead of running on, e.g. in an
    /// endless loop that grows a vector.
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

/// Records `n`; `false` when an armed thread asks for more than [`ALLOC_LIMIT`].
fn note(n: usize) -> bool {
    let _ = LARGEST.try_with(|c| {
        if n > c.get() {
            c.set(n)
        }
    });
    // never while panicking: the panic machinery (backtrace symbolisation reads debug info)
    // must be able to allocate, or a failing case would deadlock instead of being reported
    !(n > ALLOC_LIMIT && ARMED.try_with(|a| a.get()).unwrap_or(false) && !std::thread::panicking())
}

unsafe impl GlobalAlloc for Recording {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if !note(l.size()) {
            return std::ptr::null_mut();
        }
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if !note(l.size()) {
            return std::ptr::null_mut();
        }
        System.alloc_zeroed(l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if !note(new) {
            return std::ptr::null_mut();
        }
        System.realloc(p, l, new)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
}

#[global_allocator]
static ALLOC: Recording = Recording;

/// No single allocation while parsing a (small) fuzz input may exceed this.
const ALLOC_LIMIT: usize = 8 << 20;

/// Runs `f` and fails if it made an allocation over [`ALLOC_LIMIT`].
fn bounded<T>(what: &str, f: impl FnOnce() -> T) -> T {
    /// Disarms also when `f` panics (proptest catches the panic and goes on shrinking).
    struct Disarm;
    impl Drop for Disarm {
        fn drop(&mut self) {
            let _ = ARMED.try_with(|a| a.set(false));
        }
    }
    LARGEST.with(|c| c.set(0));
    ARMED.with(|a| a.set(true));
    let guard = Disarm;
    let r = f();
    drop(guard);
    let big = LARGEST.with(|c| c.get());
    assert!(big <= ALLOC_LIMIT, "{what}: one allocation of {big} bytes");
    r
}

fn cfg(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        max_shrink_iters: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Every mutation of `valid` the properties try: each truncation, then the given flips and
/// overwrites.
fn mutations(valid: &[u8], flips: &[(usize, u8)], sets: &[(usize, u8)]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = (0..valid.len()).map(|n| valid[..n].to_vec()).collect();
    if !valid.is_empty() {
        for &(i, b) in flips {
            let mut m = valid.to_vec();
            m[i % valid.len()] ^= 1 << (b % 8);
            out.push(m);
        }
        for &(i, b) in sets {
            let mut m = valid.to_vec();
            m[i % valid.len()] = b;
            out.push(m);
        }
    }
    out
}

/// Bit flips and byte overwrites: (index, bit or value) pairs.
type Edits = (Vec<(usize, u8)>, Vec<(usize, u8)>);
/// Row values (NULL or the row-image bytes) per column.
type Rows = Vec<Vec<Option<Vec<u8>>>>;

fn edits() -> impl Strategy<Value = Edits> {
    (
        vec((any::<usize>(), any::<u8>()), 0..8),
        vec(
            (
                any::<usize>(),
                prop::sample::select(vec![0u8, 0x7f, 0x80, 0xfb, 0xfc, 0xfe, 0xff]),
            ),
            0..4,
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// Encoders for valid inputs.

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("in-memory write");
    e.finish().expect("in-memory write")
}

/// MariaDB's compressed-payload format: `0x80|lenlen`, big-endian length, zlib stream.
fn mariadb_compress(data: &[u8]) -> Vec<u8> {
    let len = data.len() as u32;
    let mut out = vec![0x84];
    out.extend(len.to_be_bytes());
    out.extend(zlib(data));
    out
}

const DIG2BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];

/// MySQL's decimal2bin for `[-]int.frac` (digit strings; `int` at most `p - s` digits, `frac`
/// exactly `s` digits).
fn encode_decimal(neg: bool, int: &str, frac: &str, p: u8, s: u8) -> Vec<u8> {
    let intg = (p - s) as usize;
    let padded = format!("{int:0>intg$}");
    let mut out = Vec::new();
    let mut put = |digits: &str| {
        let n = DIG2BYTES[digits.len()];
        let v: u32 = digits.parse().unwrap_or(0);
        out.extend(&v.to_be_bytes()[4 - n..]);
    };
    let head = intg % 9;
    if head > 0 {
        put(&padded[..head]);
    }
    for g in padded.as_bytes()[head..].chunks(9) {
        put(std::str::from_utf8(g).unwrap_or("0"));
    }
    let fb = frac.as_bytes();
    let full = fb.len() / 9 * 9;
    for g in fb[..full].chunks(9) {
        put(std::str::from_utf8(g).unwrap_or("0"));
    }
    if full < fb.len() {
        put(&frac[full..]);
    }
    out[0] ^= 0x80;
    if neg {
        for b in &mut out {
            *b ^= 0xff;
        }
    }
    out
}

fn decimal_strategy() -> impl Strategy<Value = (bool, String, String, u8, u8)> {
    (1u8..=65)
        .prop_flat_map(|p| (Just(p), 0..=p.min(30)))
        .prop_flat_map(|(p, s)| {
            (
                any::<bool>(),
                prop::string::string_regex(&format!("[0-9]{{0,{}}}", p - s)).expect("regex"),
                prop::string::string_regex(&format!("[0-9]{{{s}}}")).expect("regex"),
                Just(p),
                Just(s),
            )
        })
}

fn expected_decimal(neg: bool, int: &str, frac: &str) -> String {
    let i = int.trim_start_matches('0');
    let mut s = String::new();
    let zero = int.bytes().chain(frac.bytes()).all(|c| c == b'0');
    if neg && !zero {
        s.push('-');
    }
    s.push_str(if i.is_empty() { "0" } else { i });
    if !frac.is_empty() {
        s.push('.');
        s.push_str(frac);
    }
    format!("\"{s}\"")
}

// ---------------------------------------------------------------------------------------------
// Binlog events and files.

/// One event with header and (if `crc`) CRC32, as written at file offset `at`.
fn event(t: u8, body: &[u8], at: u64, crc: bool) -> Vec<u8> {
    let size = 19 + body.len() + if crc { 4 } else { 0 };
    let mut e = Vec::with_capacity(size);
    e.extend(1_700_000_000u32.to_le_bytes());
    e.push(t);
    e.extend(1u32.to_le_bytes());
    e.extend((size as u32).to_le_bytes());
    e.extend(((at + size as u64) as u32).to_le_bytes());
    e.extend(0u16.to_le_bytes());
    e.extend(body);
    if crc {
        let c = crc32fast::hash(&e);
        e.extend(c.to_le_bytes());
    }
    e
}

/// A MariaDB 10.11 FORMAT_DESCRIPTION body with CRC32 checksums (alg byte; the CRC is added
/// by [`event`]).
fn fde_body() -> Vec<u8> {
    let mut b = 4u16.to_le_bytes().to_vec();
    let mut v = b"10.11.19-MariaDB-log".to_vec();
    v.resize(50, 0);
    b.extend(v);
    b.extend(0u32.to_le_bytes());
    b.push(19);
    // post-header lengths of types 1..=40 as MariaDB writes them (TABLE_MAP and rows: 8)
    let mut ph = vec![0u8; 40];
    for (t, l) in [
        (2usize, 13u8),
        (4, 8),
        (15, 84),
        (16, 0),
        (19, 8),
        (23, 8),
        (24, 8),
        (25, 8),
    ] {
        ph[t - 1] = l;
    }
    b.extend(ph);
    b.push(1); // BINLOG_CHECKSUM_ALG_CRC32
    b
}

fn gtid_body(seq: u64) -> Vec<u8> {
    let mut b = seq.to_le_bytes().to_vec();
    b.extend(0u32.to_le_bytes());
    b.push(0);
    b.extend([0u8; 6]);
    b
}

/// A test column: TABLE_MAP type code and metadata, the layout binlogd derives, and how its
/// values are generated.
#[derive(Debug, Clone)]
struct TestCol {
    code: u8,
    meta: Vec<u8>,
    collation: Option<u16>,
    labels: Option<Vec<String>>,
}

fn col_strategy() -> impl Strategy<Value = TestCol> {
    let c = |code: u8, meta: Vec<u8>| TestCol {
        code,
        meta,
        collation: None,
        labels: None,
    };
    prop_oneof![
        Just(c(1, vec![])),
        Just(c(2, vec![])),
        Just(c(3, vec![])),
        Just(c(8, vec![])),
        Just(c(9, vec![])),
        Just(c(13, vec![])),
        Just(c(4, vec![4])),
        Just(c(5, vec![8])),
        Just(c(10, vec![])),
        (1u8..=65)
            .prop_flat_map(|p| (Just(p), 0..=p.min(30)))
            .prop_map(move |(p, s)| c(246, vec![p, s])),
        (0u8..=6).prop_map(move |f| c(17, vec![f])),
        (0u8..=6).prop_map(move |f| c(18, vec![f])),
        (0u8..=6).prop_map(move |f| c(19, vec![f])),
        prop_oneof![Just(40u16), Just(1000u16)].prop_map(|m| TestCol {
            code: 15,
            meta: m.to_le_bytes().to_vec(),
            collation: Some(45),
            labels: None,
        }),
        (1u8..=4).prop_map(|lb| TestCol {
            code: 252,
            meta: vec![lb],
            collation: Some(63),
            labels: None,
        }),
        (1u8..=4).prop_map(move |lb| c(245, vec![lb])),
        Just(TestCol {
            code: 254,
            meta: vec![247, 1],
            collation: Some(45),
            labels: Some(vec!["a".into(), "b".into(), "c".into()]),
        }),
        Just(TestCol {
            code: 254,
            meta: vec![248, 1],
            collation: Some(45),
            labels: Some(vec!["x".into(), "y".into()]),
        }),
        (0u8..8, 0u8..4)
            .prop_map(move |(bits, bytes)| c(16, vec![bits, bytes.max(u8::from(bits == 0))])),
    ]
}

/// A valid value of `col` in row-image form (length prefix included).
fn value_for(col: &TestCol, seed: &[u8], dec: &(bool, String, String)) -> Vec<u8> {
    let raw = |n: usize| (0..n).map(|i| seed[i % seed.len()]).collect::<Vec<u8>>();
    let prefixed = |lb: usize, v: &[u8]| {
        let mut o = (v.len() as u32).to_le_bytes()[..lb].to_vec();
        o.extend(v);
        o
    };
    match col.code {
        1 | 13 => raw(1),
        2 => raw(2),
        3 | 4 => raw(4),
        8 | 5 => raw(8),
        9 | 10 => raw(3),
        246 => {
            let (p, s) = (col.meta[0], col.meta[1]);
            let int: String = dec.1.chars().take((p - s) as usize).collect();
            let mut frac: String = dec.2.chars().take(s as usize).collect();
            while frac.len() < s as usize {
                frac.push('0');
            }
            encode_decimal(dec.0, &int, &frac, p, s)
        }
        17 => raw(4 + (col.meta[0] as usize).div_ceil(2)),
        18 => raw(5 + (col.meta[0] as usize).div_ceil(2)),
        19 => raw(3 + (col.meta[0] as usize).div_ceil(2)),
        15 => {
            let max = u16::from_le_bytes([col.meta[0], col.meta[1]]);
            let text: String = seed.iter().map(|b| (b'a' + b % 26) as char).collect();
            prefixed(if max > 255 { 2 } else { 1 }, text.as_bytes())
        }
        252 => {
            let lb = col.meta[0] as usize;
            let n = seed.len().min(if lb == 1 { 255 } else { seed.len() });
            prefixed(lb, &seed[..n])
        }
        245 => {
            // binary JSON: an int16 scalar, null, or a short string
            let v = match seed[0] % 3 {
                0 => vec![0x05, seed[0], 0x01],
                1 => vec![0x04, 0x00],
                _ => vec![0x0c, 0x02, b'h', b'i'],
            };
            prefixed(col.meta[0] as usize, &v)
        }
        254 if col.meta[0] == 247 => vec![seed[0] % 4],
        254 => vec![seed[0] % 4],
        16 => {
            let bits = col.meta[1] as usize * 8 + col.meta[0] as usize;
            let mut v = raw(bits.div_ceil(8));
            if !bits.is_multiple_of(8) {
                v[0] &= (1u8 << (bits % 8)) - 1;
            }
            v
        }
        _ => Vec::new(),
    }
}

fn lenenc(n: usize) -> Vec<u8> {
    if n < 251 {
        vec![n as u8]
    } else {
        let mut v = vec![0xfc];
        v.extend((n as u16).to_le_bytes());
        v
    }
}

fn table_map_body(cols: &[TestCol]) -> Vec<u8> {
    let mut b = vec![7, 0, 0, 0, 0, 0, 1, 0];
    b.push(2);
    b.extend(b"db\0");
    b.push(1);
    b.extend(b"t\0");
    b.extend(lenenc(cols.len()));
    b.extend(cols.iter().map(|c| c.code));
    let meta: Vec<u8> = cols.iter().flat_map(|c| c.meta.clone()).collect();
    b.extend(lenenc(meta.len()));
    b.extend(meta);
    b.extend(vec![0xffu8; cols.len().div_ceil(8)]);
    b
}

fn hints(cols: &[TestCol]) -> SchemaHints {
    SchemaHints {
        columns: Some(
            cols.iter()
                .enumerate()
                .map(|(i, c)| HintColumn {
                    name: format!("c{i}"),
                    unsigned: i % 2 == 0,
                    labels: c.labels.clone(),
                    collation_id: c.collation,
                })
                .collect(),
        ),
        primary_key: vec!["c0".into()],
        ..Default::default()
    }
}

/// A WRITE_ROWS v1 body (table id 7): every column present, `nulls` marks NULL cells.
fn write_rows_body(cols: &[TestCol], rows: &[Vec<Option<Vec<u8>>>]) -> Vec<u8> {
    let mut b = vec![7, 0, 0, 0, 0, 0, 1, 0];
    b.extend(lenenc(cols.len()));
    b.extend(vec![0xffu8; cols.len().div_ceil(8)]);
    for r in rows {
        let mut nulls = vec![0u8; cols.len().div_ceil(8)];
        for (i, v) in r.iter().enumerate() {
            if v.is_none() {
                nulls[i / 8] |= 1 << (i % 8);
            }
        }
        b.extend(nulls);
        for v in r.iter().flatten() {
            b.extend(v);
        }
    }
    b
}

/// A binlog file: FDE, GTID, TABLE_MAP, one rows event of type `rows_type`, XID.
fn binlog_file(cols: &[TestCol], rows_type: u8, rows_body: &[u8]) -> (Vec<u8>, Vec<u64>) {
    let mut f = vec![0xfe, b'b', b'i', b'n'];
    let mut starts = Vec::new();
    for (t, body) in [
        (15u8, fde_body()),
        (et::MARIADB_GTID, gtid_body(9)),
        (19, table_map_body(cols)),
        (rows_type, rows_body.to_vec()),
        (16, 42u64.to_le_bytes().to_vec()),
    ] {
        starts.push(f.len() as u64);
        let e = event(t, &body, f.len() as u64, true);
        f.extend(e);
    }
    (f, starts)
}

/// Reads a binlog file through [`BinlogFileReader`] and the [`Decoder`] (as `binlogd replay
/// --binlog-file` does), rendering every row change; returns the rows rendered.
fn run_file(bytes: &[u8], cols: &[TestCol], verify: bool) -> Result<usize, String> {
    let mut r = BinlogFileReader::new("binlog.000001", bytes).map_err(|e| e.to_string())?;
    let mut d = Decoder::new(
        Flavor::MariaDb,
        TableFilter::new(None, &[]).map_err(|e| e.to_string())?,
        Arc::new(CollationMap::builtin()),
        verify,
    );
    d.set_hints("db", "t", hints(cols));
    d.start_at("binlog.000001", None, None);
    let mut rendered = 0;
    let mut out = Vec::new();
    let mut guard = 0;
    while let Some(ev) = r.next_event().map_err(|e| e.to_string())? {
        guard += 1;
        assert!(guard < 100, "reader loops");
        match d
            .handle(&std::sync::Arc::new(ev))
            .map_err(|e| e.to_string())?
        {
            Step::Continue => {}
            Step::NeedHints { .. } => return Err("asked for hints it was given".into()),
        }
        if let Some(b) = d.take_batch() {
            for ch in b.changes() {
                out.clear();
                ch.write_json(&mut out, &SourceInfo::default(), 0)
                    .map_err(|e| e.to_string())?;
                serde_json::from_slice::<serde_json::Value>(&out)
                    .map_err(|e| format!("invalid JSON rendered: {e}"))
                    .expect("rendered JSON parses");
                rendered += 1;
            }
        }
    }
    Ok(rendered)
}

fn table_strategy() -> impl Strategy<Value = (Vec<TestCol>, Rows)> {
    vec(col_strategy(), 1..12).prop_flat_map(|cols| {
        let n = cols.len();
        let cols2 = cols.clone();
        let row = (
            vec((any::<bool>(), vec(any::<u8>(), 1..40)), n),
            (any::<bool>(), "[0-9]{0,40}", "[0-9]{0,30}"),
        )
            .prop_map(move |(vals, dec)| {
                cols2
                    .iter()
                    .zip(vals)
                    .map(|(c, (null, seed))| (!null).then(|| value_for(c, &seed, &dec)))
                    .collect::<Vec<_>>()
            });
        (Just(cols), vec(row, 1..6))
    })
}

// ---------------------------------------------------------------------------------------------
// The properties.

proptest! {
    #![proptest_config(cfg(10_000))]

    #[test]
    fn mariadb_events_take_any_bytes(d in vec(any::<u8>(), 0..200), phl in 0usize..40) {
        bounded("MariaDB events", || {
            let _ = mariadb::parse_gtid(&d, 1);
            let _ = mariadb::parse_gtid_list(&d);
            let _ = mariadb::parse_query_compressed(&d, phl);
            let _ = rows::mariadb_uncompress(&d);
        });
    }

    #[test]
    fn gtid_list_round_trips_and_truncations_fail(
        list in vec((any::<u32>(), any::<u32>(), any::<u64>()), 0..20),
        (flips, sets) in edits(),
    ) {
        let mut b = (list.len() as u32).to_le_bytes().to_vec();
        for (d, s, n) in &list {
            b.extend(d.to_le_bytes());
            b.extend(s.to_le_bytes());
            b.extend(n.to_le_bytes());
        }
        prop_assert_eq!(mariadb::parse_gtid_list(&b).ok(), Some(list.clone()));
        for n in 0..b.len() {
            prop_assert!(mariadb::parse_gtid_list(&b[..n]).is_err());
        }
        for m in mutations(&b, &flips, &sets) {
            bounded("GTID_LIST", || { let _ = mariadb::parse_gtid_list(&m); });
        }
    }

    #[test]
    fn compressed_payloads_round_trip_and_mutations_fail_cleanly(
        data in vec(any::<u8>(), 0..600),
        (flips, sets) in edits(),
        claim in prop_oneof![Just(u32::MAX), Just(1u32 << 30), Just(1u32 << 29), any::<u32>()],
    ) {
        let c = mariadb_compress(&data);
        prop_assert_eq!(rows::mariadb_uncompress(&c).ok(), Some(data.clone()));
        for m in mutations(&c, &flips, &sets) {
            bounded("compressed rows", || { let _ = rows::mariadb_uncompress(&m); });
        }
        // a lying length header: refused (or at most what the stream holds), never allocated
        let mut lie = c.clone();
        lie[1..5].copy_from_slice(&claim.to_be_bytes());
        let r = bounded("compressed rows, huge length", || rows::mariadb_uncompress(&lie));
        prop_assert!(claim as usize == data.len() || r.is_err());
    }

    #[test]
    fn query_compressed_round_trips_and_mutations_fail_cleanly(
        db in "[a-z]{0,10}",
        q in "[ -~]{0,200}",
        svars in vec(any::<u8>(), 0..20),
        (flips, sets) in edits(),
    ) {
        let mut b = vec![0u8; 8];
        b.push(db.len() as u8);
        b.extend([0, 0]);
        b.extend((svars.len() as u16).to_le_bytes());
        b.extend(&svars);
        b.extend(db.as_bytes());
        b.push(0);
        b.extend(mariadb_compress(q.as_bytes()));
        prop_assert_eq!(mariadb::parse_query_compressed(&b, 13).ok(), Some((db.clone(), q.clone())));
        for m in mutations(&b, &flips, &sets) {
            bounded("QUERY_COMPRESSED", || { let _ = mariadb::parse_query_compressed(&m, 13); });
        }
    }

    #[test]
    fn rows_headers_take_any_bytes(t in prop::sample::select(vec![23u8, 24, 25, 30, 31, 32, 39, 166, 167, 168, 169, 170, 171]),
                                  body in vec(any::<u8>(), 0..64), v2_extra in any::<u16>()) {
        let kind = RowsEventKind::from_type(t).expect("rows type");
        bounded("rows header", || {
            for phl in [6, 8] {
                if let Ok(h) = rows::parse_rows_header(kind, &body, phl) {
                    assert!(h.rows_offset <= body.len());
                }
            }
            let mut b = body.clone();
            if b.len() >= 10 {
                b[8..10].copy_from_slice(&v2_extra.to_le_bytes());
            }
            let _ = rows::parse_rows_header(kind, &b, 8);
        });
    }

    #[test]
    fn decimals_round_trip((neg, int, frac, p, s) in decimal_strategy()) {
        let b = encode_decimal(neg, &int, &frac, p, s);
        let mut out = Vec::new();
        decimal_to_string(&b, p, s, &mut out).map_err(TestCaseError::fail)?;
        prop_assert_eq!(String::from_utf8(out).ok(), Some(expected_decimal(neg, &int, &frac)));
    }

    #[test]
    fn decimals_take_any_bytes(b in vec(any::<u8>(), 0..40), p in any::<u8>(), s in any::<u8>()) {
        let mut out = Vec::new();
        if decimal_to_string(&b, p, s, &mut out).is_ok() {
            let text = String::from_utf8(out).expect("UTF-8");
            let t = text.trim_matches('"').trim_start_matches('-');
            prop_assert!(t.bytes().all(|c| c.is_ascii_digit() || c == b'.'), "{}", text);
            prop_assert!(t.len() <= p as usize + 2, "{} for DECIMAL({},{})", text, p, s);
        }
    }

    #[test]
    fn values_take_any_bytes(kind in kind_strategy(), v in vec(any::<u8>(), 0..64),
                             unsigned in any::<bool>(), labels in any::<bool>(),
                             text in prop::sample::select(vec![None, Some(TextEncoding::Utf8), Some(TextEncoding::Binary), Some(TextEncoding::Utf32),
                                                              Some(TextEncoding::Other(encoding_rs::SHIFT_JIS)), Some(TextEncoding::Other(encoding_rs::UTF_16BE))]),
                             json_text in any::<bool>(), pad in prop::option::of(0u16..80),
                             special in prop::sample::select(vec![None, Some(SpecialType::Uuid), Some(SpecialType::Inet4), Some(SpecialType::Inet6)])) {
        let col = ColumnSchema {
            name: "c".into(),
            json_key: "\"c\":".into(),
            type_code: 0,
            kind,
            unsigned,
            text,
            json_text,
            labels: labels.then(|| Arc::from(vec!["a".to_string(), "b".to_string()])),
            binary_pad: pad,
            special,
            json_origin: None,
        };
        let mut out = Vec::new();
        bounded("value", || {
            if push_value(&mut out, &col, &v).is_ok() {
                serde_json::from_slice::<serde_json::Value>(&out).expect("rendered JSON parses");
            }
        });
        // and the value cut to the length the row splitter gives it
        let mut cut = None;
        if let Some(n) = rows::fixed_size(kind) {
            if n <= v.len() {
                out.clear();
                if push_value(&mut out, &col, &v[..n]).is_ok() {
                    serde_json::from_slice::<serde_json::Value>(&out).expect("rendered JSON parses");
                }
                cut = Some(&v[..n]);
            }
        }
        // the check before a batch fails exactly when rendering does, with its error; a
        // checked value renders the same without its text being validated again
        for v in [Some(&v[..]), cut].into_iter().flatten() {
            let mut rendered = Vec::new();
            let r = push_value(&mut rendered, &col, v).map(|_| ());
            prop_assert_eq!(check_value(&col, v), r.clone());
            if r.is_ok() {
                let mut again = Vec::new();
                push_value_in(&mut again, &col, v, true).map_err(TestCaseError::fail)?;
                prop_assert_eq!(again, rendered);
            }
        }
    }

    #[test]
    fn text_takes_any_bytes(v in vec(any::<u8>(), 0..64)) {
        for enc in [TextEncoding::Utf8, TextEncoding::Binary, TextEncoding::Utf32, TextEncoding::Other(encoding_rs::GB18030)] {
            let _ = transcode_into(enc, &v, &mut String::new());
        }
    }

    #[test]
    fn binary_json_takes_any_bytes(v in vec(any::<u8>(), 0..200), (flips, sets) in edits()) {
        bounded("binary JSON", || { let _ = mysql_json_value(&v); });
        // mutations of a small object document
        let doc: &[u8] = &[
            0x00, 0x02, 0x00, 0x2b, 0x00, 0x12, 0x00, 0x01, 0x00, 0x13, 0x00, 0x01, 0x00,
            0x02, 0x14, 0x00, 0x05, 0x02, 0x00, 0x61, 0x62, 0x03, 0x00, 0x17, 0x00, 0x05, 0x01,
            0x00, 0x0c, 0x0f, 0x00, 0x04, 0x00, 0x00, 0x02, 0x78, 0x79, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00,
        ];
        for m in mutations(doc, &flips, &sets) {
            bounded("binary JSON", || { let _ = mysql_json_value(&m); });
        }
        // a DECIMAL scalar (opaque NEWDECIMAL: precision, scale, binary DECIMAL): 1.50 in an
        // array, so that its length and precision/scale bytes are mutated too
        let dec: &[u8] = &[0x02, 0x01, 0x00, 0x0d, 0x00, 0x0f, 0x07, 0x00, 0xf6, 0x04, 0x03, 0x02, 0x81, 0x32];
        for m in mutations(dec, &flips, &sets) {
            bounded("binary JSON DECIMAL", || {
                if let Ok(v) = mysql_json_value(&m) {
                    serde_json::to_vec(&v).expect("serialises");
                }
            });
        }
    }

    #[test]
    fn json_diffs_take_any_bytes(diff in vec(any::<u8>(), 0..120), path in "[$.\\[\\]\"a-c0-9\\\\]{0,12}") {
        let mut doc = serde_json::json!({"a": [1, 2, {"b": "c"}], "d": null});
        let _ = jsondiff::apply(&mut doc, &diff);
        // a REPLACE diff with an arbitrary path and a valid value (int16 5)
        let mut d = vec![0u8];
        d.extend(lenenc(path.len()));
        d.extend(path.as_bytes());
        d.extend([3, 0x05, 0x05, 0x00]);
        let _ = jsondiff::apply(&mut doc, &d);
    }

    #[test]
    fn column_metadata_takes_any_bytes(code in any::<u8>(), real in any::<u8>(), m in vec(any::<u8>(), 0..4)) {
        use mysql_common::constants::ColumnType;
        if let (Ok(raw), Ok(real)) = (ColumnType::try_from(code), ColumnType::try_from(real)) {
            if let Ok(kind) = super::table::col_kind(raw, real, &m) {
                let _ = rows::fixed_size(kind);
            }
        }
    }
}

fn kind_strategy() -> impl Strategy<Value = ColKind> {
    prop_oneof![
        any::<u8>().prop_map(ColKind::Int),
        Just(ColKind::Year),
        Just(ColKind::Float),
        Just(ColKind::Double),
        (any::<u8>(), any::<u8>())
            .prop_map(|(precision, scale)| ColKind::Decimal { precision, scale }),
        Just(ColKind::Date),
        Just(ColKind::TimeOld),
        any::<u8>().prop_map(|fsp| ColKind::Time2 { fsp: fsp % 9 }),
        Just(ColKind::DateTimeOld),
        any::<u8>().prop_map(|fsp| ColKind::DateTime2 { fsp: fsp % 9 }),
        Just(ColKind::TimestampOld),
        any::<u8>().prop_map(|fsp| ColKind::Timestamp2 { fsp: fsp % 9 }),
        (1u8..=2).prop_map(|len_bytes| ColKind::Str { len_bytes }),
        (1u8..=4).prop_map(|len_bytes| ColKind::Blob { len_bytes }),
        (1u8..=4).prop_map(|len_bytes| ColKind::Json { len_bytes }),
        (1u8..=4).prop_map(|len_bytes| ColKind::Geometry { len_bytes }),
        (1u8..=4).prop_map(|len_bytes| ColKind::Vector { len_bytes }),
        (0u8..10).prop_map(|bytes| ColKind::Enum { bytes }),
        (0u8..10).prop_map(|bytes| ColKind::Set { bytes }),
        (0u16..600).prop_map(|bits| ColKind::Bit { bits }),
    ]
}

proptest! {
    #![proptest_config(cfg(1_500))]

    /// Valid tables and rows decode and render; every mutation of the rows event (re-checksummed,
    /// so the parsers see it) fails cleanly or decodes, and never panics or over-allocates.
    #[test]
    fn rows_events_decode_and_mutations_fail_cleanly(
        (cols, rows) in table_strategy(),
        (flips, sets) in edits(),
        huge_len in prop_oneof![Just(u32::MAX), Just(0x00ff_ffff), any::<u32>()],
    ) {
        let body = write_rows_body(&cols, &rows);
        let (file, _) = binlog_file(&cols, 23, &body);
        prop_assert_eq!(run_file(&file, &cols, true), Ok(rows.len()));

        // compressed (MariaDB WRITE_ROWS_COMPRESSED): header, then the compressed rows part
        let hdr_len = 8 + lenenc(cols.len()).len() + cols.len().div_ceil(8);
        let mut cbody = body[..hdr_len].to_vec();
        cbody.extend(mariadb_compress(&body[hdr_len..]));
        let (cfile, _) = binlog_file(&cols, 166, &cbody);
        prop_assert_eq!(run_file(&cfile, &cols, true), Ok(rows.len()));

        for m in mutations(&body, &flips, &sets).into_iter().chain(mutations(&cbody, &flips, &sets)) {
            for t in [23u8, 24, 25, 166] {
                let (f, _) = binlog_file(&cols, t, &m);
                bounded("rows event", || { let _ = run_file(&f, &cols, true); });
            }
        }
        // a length prefix claiming up to 4 GiB in the first prefixed column
        if let Some(i) = cols.iter().position(|c| matches!(c.code, 252 | 245)) {
            let mut m = body.clone();
            let off = hdr_len + cols.len().div_ceil(8)
                + rows[0][..i].iter().flatten().map(|v| v.len()).sum::<usize>();
            if rows[0][i].is_some() {
                let lb = cols[i].meta[0] as usize;
                m[off..off + lb].copy_from_slice(&huge_len.to_le_bytes()[..lb]);
                let (f, _) = binlog_file(&cols, 23, &m);
                bounded("huge length prefix", || { let _ = run_file(&f, &cols, true); });
            }
        }
    }

    /// Any single corrupt byte after the FORMAT_DESCRIPTION event is an error naming the
    /// position of the event it is in: the CRC32 (or the framing checks) catch it.
    #[test]
    fn corrupt_bytes_in_a_binlog_file_are_errors_at_their_event(
        (cols, rows) in table_strategy(),
        at in any::<prop::sample::Index>(),
        x in 1u8..=255,
    ) {
        let body = write_rows_body(&cols, &rows);
        let (mut file, starts) = binlog_file(&cols, 23, &body);
        let first = starts[1] as usize;
        let i = first + at.index(file.len() - first);
        file[i] ^= x;
        let ev_start = *starts.iter().rev().find(|&&s| s as usize <= i).expect("an event");
        let err = bounded("corrupt file", || run_file(&file, &cols, true)).expect_err("corruption is an error");
        prop_assert!(err.contains(&format!(":{ev_start}")), "error {} does not name {}", err, ev_start);
    }

    /// Truncated files: an error naming the event cut off (never a panic, never a hang).
    #[test]
    fn truncated_binlog_files_are_errors((cols, rows) in table_strategy()) {
        let body = write_rows_body(&cols, &rows);
        let (file, starts) = binlog_file(&cols, 23, &body);
        for n in 0..file.len() {
            let r = bounded("truncated file", || run_file(&file[..n], &cols, true));
            if starts.contains(&(n as u64)) {
                // cut between events: what is there is valid
                prop_assert!(r.is_ok(), "cut at {}: {:?}", n, r);
            } else {
                prop_assert!(r.is_err(), "cut at {}: {:?}", n, r);
            }
        }
    }

    /// Arbitrary event bodies after a valid FDE and TABLE_MAP, checksums disabled so that
    /// every parser behind the type code sees the bytes.
    #[test]
    fn arbitrary_events_fail_cleanly(
        (cols, _rows) in table_strategy(),
        t in prop_oneof![Just(2u8), Just(4), Just(15), Just(16), Just(19), Just(23), Just(24), Just(25), Just(160),
                         Just(161), Just(162), Just(163), Just(165), Just(166), Just(167), Just(168), Just(169), any::<u8>()],
        body in vec(any::<u8>(), 0..300),
    ) {
        let mut f = vec![0xfe, b'b', b'i', b'n'];
        for (t, b) in [(15u8, fde_body()), (19, table_map_body(&cols)), (t, body)] {
            let e = event(t, &b, f.len() as u64, true);
            f.extend(e);
        }
        bounded("arbitrary event", || { let _ = run_file(&f, &cols, false); });
    }
}

// ---------------------------------------------------------------------------------------------
// Regression tests: the minimal inputs of the bugs the properties found.

/// A rows event whose image has no present column takes no bytes per row: `split_rows` looped
/// forever, filling memory with cells.
#[test]
fn regression_row_image_without_present_columns() {
    let cols = vec![TestCol {
        code: 1,
        meta: vec![],
        collation: None,
        labels: None,
    }];
    // table id, flags, 1 column, present bitmap 0 (no column), then one stray byte
    let body = [7, 0, 0, 0, 0, 0, 1, 0, 1, 0x00, 0x00];
    let (f, starts) = binlog_file(&cols, 23, &body);
    let e = bounded("empty row image", || run_file(&f, &cols, true))
        .expect_err("error, not an endless loop");
    assert!(e.contains(&format!("binlog.000001:{}", starts[3])), "{e}");
    assert!(e.contains("takes no bytes"), "{e}");
}

/// The compressed-rows header claimed up to 1 GiB and got it as `Vec::with_capacity` before
/// inflating a single byte.
#[test]
fn regression_compressed_length_is_not_allocated_up_front() {
    let mut c = mariadb_compress(b"x");
    c[1..5].copy_from_slice(&(1u32 << 30).to_be_bytes());
    let r = bounded("compressed", || rows::mariadb_uncompress(&c));
    assert!(r.unwrap_err().contains("more than"));
}

/// DECIMAL digit groups above their digit count (e.g. 4 bytes holding 4294967295 for 9
/// digits) were printed as a wrong number instead of being rejected.
#[test]
fn regression_decimal_group_out_of_range_is_an_error() {
    // DECIMAL(10,0): 1 digit in 1 byte, then 9 digits in 4 bytes, all 0xff after the sign bit
    let b = [0x80, 0xff, 0xff, 0xff, 0xff];
    let mut out = Vec::new();
    let e = decimal_to_string(&b, 10, 0, &mut out).unwrap_err();
    assert!(e.contains("9-digit group"), "{e}");
    // the leading 1-digit group holding 10..=255
    let e = decimal_to_string(&[0x8a, 0, 0, 0, 0], 10, 0, &mut out).unwrap_err();
    assert!(e.contains("1-digit group"), "{e}");
}

/// DECIMAL precision/scale out of range made `decimal_to_string` subtract below zero and slice
/// past its 40-byte buffer.
#[test]
fn regression_decimal_bad_precision_is_an_error() {
    let mut out = Vec::new();
    assert!(decimal_to_string(&[0x80], 0, 1, &mut out).is_err());
    assert!(decimal_to_string(&[0x80; 114], 255, 0, &mut out).is_err());
}

/// A value shorter than its fixed size (e.g. an empty YEAR) indexed past its end.
#[test]
fn regression_short_fixed_value_is_an_error() {
    let col = |kind| ColumnSchema {
        name: "c".into(),
        json_key: "\"c\":".into(),
        type_code: 0,
        kind,
        unsigned: false,
        text: None,
        json_text: false,
        labels: None,
        binary_pad: None,
        special: None,
        json_origin: None,
    };
    let mut out = Vec::new();
    for kind in [
        ColKind::Year,
        ColKind::Float,
        ColKind::Date,
        ColKind::Time2 { fsp: 6 },
        ColKind::DateTime2 { fsp: 2 },
        ColKind::Timestamp2 { fsp: 4 },
    ] {
        assert!(push_value(&mut out, &col(kind), &[]).is_err(), "{kind:?}");
    }
    assert!(push_value(&mut out, &col(ColKind::Time2 { fsp: 7 }), &[0; 7]).is_err());
    assert!(push_value(&mut out, &col(ColKind::Int(9)), &[0; 9]).is_err());
}

/// A binlog file cut in the middle of an event made mysql_common's `BinlogFile` panic
/// (`read_exact(..).unwrap()`); an event size below 23 with checksums made it slice below 0;
/// a size of 4 GiB was allocated before reading.
#[test]
fn regression_binlog_file_framing() {
    let cols = vec![TestCol {
        code: 1,
        meta: vec![],
        collation: None,
        labels: None,
    }];
    let body = write_rows_body(&cols, &[vec![Some(vec![5])]]);
    let (f, starts) = binlog_file(&cols, 23, &body);
    // cut inside the rows event
    let cut = starts[3] as usize + 25;
    let e = run_file(&f[..cut], &cols, true).unwrap_err();
    assert!(
        e.contains(&format!("binlog.000001:{}", starts[3])) && e.contains("truncated"),
        "{e}"
    );
    // event size 20 (< header + CRC)
    let mut m = f.clone();
    let s = starts[2] as usize;
    m[s + 9..s + 13].copy_from_slice(&20u32.to_le_bytes());
    let e = run_file(&m, &cols, true).unwrap_err();
    assert!(
        e.contains(&format!(":{}", starts[2])) && e.contains("event size 20"),
        "{e}"
    );
    // event size 4 GiB - 1, end position to match: refused before allocating
    let mut m = f.clone();
    m[s + 9..s + 13].copy_from_slice(&u32::MAX.to_le_bytes());
    m[s + 13..s + 17].copy_from_slice(&(starts[2] as u32).wrapping_add(u32::MAX).to_le_bytes());
    let e = bounded("4 GiB event", || run_file(&m, &cols, true)).unwrap_err();
    assert!(e.contains(&format!(":{}", starts[2])), "{e}");
}

/// The checksum test of the brief: one corrupt byte in an event body of a binlog file is an
/// error naming the file and the event's position (and not with `verify_checksums = false`,
/// which shows the CRC is what catches it).
#[test]
fn corrupt_event_body_in_binlog_file_is_a_checksum_error() {
    let cols = vec![TestCol {
        code: 3,
        meta: vec![],
        collation: None,
        labels: None,
    }];
    let body = write_rows_body(&cols, &[vec![Some(vec![1, 2, 3, 4])]]);
    let (mut f, starts) = binlog_file(&cols, 23, &body);
    assert_eq!(run_file(&f, &cols, true), Ok(1));
    // the last byte of the row value
    let i = starts[4] as usize - 5;
    f[i] ^= 0x40;
    let e = run_file(&f, &cols, true).unwrap_err();
    assert!(
        e.contains(&format!("binlog.000001:{}", starts[3]))
            && e.contains("CRC32 checksum mismatch"),
        "{e}"
    );
    assert_eq!(
        run_file(&f, &cols, false),
        Ok(1),
        "unverified, the corrupt row passes"
    );
}

/// The decoder's own checks, with a typed error: a short GTID body names its position.
#[test]
fn malformed_event_error_carries_position() {
    let mut f = vec![0xfe, b'b', b'i', b'n'];
    let e = event(15, &fde_body(), 4, true);
    f.extend(e);
    let at = f.len() as u64;
    f.extend(event(et::MARIADB_GTID, &[1, 2, 3], at, true));
    let mut r = BinlogFileReader::new("b.1", &f[..]).expect("magic");
    let mut d = Decoder::new(
        Flavor::MariaDb,
        TableFilter::new(None, &[]).expect("filter"),
        Arc::new(CollationMap::builtin()),
        true,
    );
    d.start_at("b.1", None, None);
    let mut last = None;
    while let Some(ev) = r.next_event().expect("framing is fine") {
        last = Some(d.handle(&std::sync::Arc::new(ev)));
    }
    match last {
        Some(Err(DecodeError::At {
            file,
            pos,
            event_type,
            ..
        })) => {
            assert_eq!(
                (file.as_str(), pos, event_type),
                ("b.1", at, et::MARIADB_GTID)
            );
        }
        other => panic!("{other:?}"),
    }
}

/// Every single-bit flip after the FORMAT_DESCRIPTION of a small binlog file is an error
/// naming the event it hit (exhaustive, unlike the sampled property above).
#[test]
fn every_bit_flip_in_a_binlog_file_is_an_error() {
    let cols = vec![
        TestCol {
            code: 3, // LONG
            meta: vec![],
            collation: None,
            labels: None,
        },
        TestCol {
            code: 15, // VARCHAR(40)
            meta: vec![40, 0],
            collation: None,
            labels: None,
        },
    ];
    let rows = vec![vec![
        Some(7i32.to_le_bytes().to_vec()),
        Some(vec![3, b'a', b'b', b'c']),
    ]];
    let body = write_rows_body(&cols, &rows);
    let (file, starts) = binlog_file(&cols, 23, &body);
    assert_eq!(
        run_file(&file, &cols, true),
        Ok(1),
        "the clean file decodes"
    );
    let mut missed = Vec::new();
    for i in starts[1] as usize..file.len() {
        for bit in 0..8 {
            let mut f = file.clone();
            f[i] ^= 1 << bit;
            let ev_start = *starts
                .iter()
                .rev()
                .find(|&&s| s as usize <= i)
                .unwrap_or(&0);
            match run_file(&f, &cols, true) {
                Err(e) if e.contains(&format!(":{ev_start}")) => {}
                other => missed.push(format!(
                    "byte {i} bit {bit} (event at {ev_start}): {other:?}"
                )),
            }
        }
    }
    assert!(
        missed.is_empty(),
        "{} flips not reported: {:?}",
        missed.len(),
        &missed[..missed.len().min(12)]
    );
}
