//! Decode + JSON render over a captured binlog file: no servers, no network, no disk writes.
//!
//! `benches/data/mariadb_mixed.bin` (made by `benches/data/capture.sh` from the MariaDB test
//! server) holds 19,000 row changes of a 10-column table and of a wide table with DECIMAL,
//! DATETIME(6), TIMESTAMP(3), JSON, TEXT, ENUM and VARCHAR columns, in 23 transactions. The
//! bench reads it the way `binlogd replay --binlog-file` does — [`BinlogFileReader`] splits
//! it into events, the [`Decoder`] (flavor from the FORMAT_DESCRIPTION event, no server, so no
//! schema hints) turns them into batches — and renders every row change as the file sink does
//! (one JSON line each, the per-chunk [`Envelope`] rendered once per chunk).
//!
//! Three benchmarks: `decode` (file → batches), `render` (batches → JSON lines) and
//! `decode+render`; criterion reports each as time per pass and row changes per second
//! ("elem/s"), and a last line sums up rows/s and MB/s of JSON.
//!
//! Run: `cargo bench --bench decode_render` (`-- --quick` for a short run).

use binlogd::binlog::Flavor;
use binlogd::decode::charset::CollationMap;
use binlogd::decode::event::{Batch, Change, Envelope, SourceInfo};
use binlogd::decode::{Decoder, Step};
use binlogd::filter::TableFilter;
use binlogd::source::binlog_file::BinlogFileReader;
use criterion::{Criterion, Throughput};
use mysql_common::binlog::events::FormatDescriptionEvent;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

const NAME: &str = "mariadb_mixed.bin";
const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/benches/data/mariadb_mixed.bin"
);
/// Row changes in the file: narrow 10,000 inserts + 5,000 updates + 1,000 deletes, wide 2,000
/// inserts + 1,000 updates.
const ROWS: usize = 19_000;

/// The file's batches, decoded as `replay --binlog-file` decodes without a server.
fn decode(bytes: &[u8]) -> Vec<Batch> {
    let mut file = BinlogFileReader::new(NAME, bytes).expect("a binlog file");
    let mut decoder: Option<Decoder> = None;
    let mut batches = Vec::new();
    while let Some(ev) = file.next_event().expect("a well-formed binlog file") {
        let ev = Arc::new(ev);
        let d = decoder.get_or_insert_with(|| {
            let fde = ev
                .read_event::<FormatDescriptionEvent<'_>>()
                .expect("the file starts with a FORMAT_DESCRIPTION event");
            let flavor = if fde
                .server_version()
                .to_ascii_lowercase()
                .contains("mariadb")
            {
                Flavor::MariaDb
            } else {
                Flavor::MySql
            };
            let filter = TableFilter::new(None, &[]).unwrap();
            let mut d = Decoder::new(flavor, filter, Arc::new(CollationMap::builtin()), true);
            d.start_at(NAME, None, None);
            d
        });
        loop {
            match d.handle(&ev).expect("decodes") {
                Step::Continue => break,
                // no server to ask: what `replay --binlog-file` does without one
                Step::NeedHints { db, table } => d.set_hints(&db, &table, Default::default()),
            }
        }
        if let Some(b) = d.take_batch() {
            batches.push(b);
        }
    }
    batches
}

/// Renders every row change of `batches` as a JSON line into `out` (emptied after each batch,
/// as the file sink hands each batch's lines on); returns (rows, bytes of JSON).
fn render(batches: &[Batch], src: &SourceInfo, out: &mut Vec<u8>) -> (usize, usize) {
    let mut env = Envelope::default();
    let (mut rows, mut bytes) = (0, 0);
    for b in batches {
        for t in &b.txns {
            for c in &t.chunks {
                for row in 0..c.rows as usize {
                    let ch = Change {
                        txn: t,
                        chunk: c,
                        row,
                    };
                    if row == 0 {
                        env.set(&ch, src);
                    }
                    ch.write_json_env(out, &env, 1_764_547_200_000)
                        .expect("renders");
                    out.push(b'\n');
                    rows += 1;
                }
            }
        }
        bytes += out.len();
        black_box(&out[..]);
        out.clear();
    }
    (rows, bytes)
}

fn source() -> SourceInfo {
    SourceInfo {
        name: "bench".into(),
        pipeline: "bench".into(),
        server: String::new(),
        replay: true,
        snapshot_resume: None,
    }
}

/// The file decodes to the row changes it was made of, and they render as JSON.
fn check(bytes: &[u8]) -> usize {
    let batches = decode(bytes);
    let mut out = Vec::new();
    let mut env = Envelope::default();
    let src = source();
    let first = batches[0].changes().next().expect("row changes");
    env.set(&first, &src);
    first.write_json_env(&mut out, &env, 0).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
    assert_eq!(v["source"]["db"], "bench_decode", "{v}");
    let (rows, json) = render(&batches, &src, &mut Vec::new());
    assert_eq!(rows, ROWS, "row changes in {DATA}");
    json
}

fn benches(c: &mut Criterion, bytes: &[u8]) {
    let src = source();
    let batches = decode(bytes);
    let mut g = c.benchmark_group("decode_render");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.bench_function("decode", |b| b.iter(|| decode(black_box(bytes))));
    let mut out = Vec::with_capacity(1 << 20);
    g.bench_function("render", |b| {
        b.iter(|| render(black_box(&batches), &src, &mut out))
    });
    g.bench_function("decode+render", |b| {
        b.iter(|| render(&decode(black_box(bytes)), &src, &mut out))
    });
    g.finish();
}

/// rows/s and MB/s of JSON for decode+render: the median of passes over about a second.
fn summary(bytes: &[u8], json: usize) {
    let src = source();
    let mut out = Vec::with_capacity(1 << 20);
    let mut times = Vec::new();
    let t0 = Instant::now();
    while times.len() < 5 || (t0.elapsed() < Duration::from_secs(1) && times.len() < 200) {
        let t = Instant::now();
        black_box(render(&decode(bytes), &src, &mut out));
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let med = times[times.len() / 2];
    println!(
        "decode+render: {ROWS} row changes ({:.1} MB of binlog → {:.1} MB of JSON) in {:.1} ms \
         (median of {} passes): {:.0} rows/s, {:.0} MB/s of JSON",
        bytes.len() as f64 / 1e6,
        json as f64 / 1e6,
        med * 1e3,
        times.len(),
        ROWS as f64 / med,
        json as f64 / 1e6 / med
    );
}

fn main() {
    let bytes = std::fs::read(DATA)
        .unwrap_or_else(|e| panic!("{DATA}: {e} (regenerate it with benches/data/capture.sh)"));
    let json = check(&bytes);
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c, &bytes);
    c.final_summary();
    summary(&bytes, json);
}
