//! In process, against the real MariaDB test server: the checkpoint writer
//! (`checkpoint::writer::Store`). It stores only positions the pipeline reported as
//! acknowledged, at most once per interval (the latest one), the final one when the pipeline
//! ends, and keeps holding the pipeline lock while it runs.

mod common;

use binlogd::binlog::position::{BinlogCoord, Position};
use binlogd::checkpoint::lease::Lease;
use binlogd::checkpoint::writer::Store;
use binlogd::checkpoint::{Checkpoint, SourceIdentity};
use binlogd::pipeline::{Acked, Fence};
use common::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

fn acked(pos: u64, rows: u64) -> Option<Acked> {
    Some(Acked {
        position: Position {
            coord: BinlogCoord {
                file: "binlog.000007".into(),
                pos,
            },
            gtid: None,
            restart: None,
        },
        event_ts_ms: 1_700_000_000_000 + pos,
        rows,
        snapshot: None,
    })
}

async fn checkpoint(url: &str, schema: &str, pipeline: &str) -> Checkpoint {
    let opts = mysql_async::Opts::from_url(url).expect("test url");
    let mut cp = Checkpoint::connect(opts, schema, pipeline)
        .await
        .expect("connect");
    cp.migrate().await.expect("migrate");
    cp
}

#[test]
fn writer_stores_only_acknowledged_positions_latest_first_and_the_final_one() {
    let f = Flavor::MariaDb;
    let url = f.root_url();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let schema = format!("cpw_{}", nonce() % 1_000_000);
        let pipeline = "writer-test";
        let mut cp = checkpoint(&url, &schema, pipeline).await;
        assert!(cp.try_lock().await.expect("lock"), "the lock is free");
        let (fence_tx, _fence_rx) = watch::channel(Fence::Open);
        let lease = Arc::new(Lease {
            confirmed: std::sync::atomic::AtomicU64::new(0),
            fence: fence_tx,
            fence_after: Duration::from_secs(12),
            lease: Duration::from_secs(15),
        });
        lease.confirm(binlogd::metrics::mono_ms());
        let (gate_tx, _gate_rx) = watch::channel(true);
        let (acked_tx, acked_rx) = watch::channel::<Option<Acked>>(None);
        let (stop_tx, _stop_rx) = watch::channel(false);
        let store = Store {
            opts: mysql_async::Opts::from_url(&url).expect("url"),
            schema: schema.clone(),
            pipeline: pipeline.into(),
            id: SourceIdentity {
                server_id: 1,
                server_uuid: None,
            },
            interval: Duration::from_millis(300),
            max_unstored: Duration::from_secs(60),
            store_timeout: Duration::from_secs(5),
            ping_every: Duration::from_secs(1),
            wait_timeout_secs: 20,
            gate: gate_tx,
            lease: lease.clone(),
            snapshot_stored: None,
        };
        let writer = tokio::spawn(store.run(cp, acked_rx, stop_tx));
        let mut reader = checkpoint(&url, &schema, pipeline).await;

        // nothing acknowledged: nothing stored
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(
            reader.load().await.expect("load").is_none(),
            "stored without an ack"
        );
        // the lock stays held by the writer's session
        assert!(
            reader.is_locked().await.expect("is_locked"),
            "the writer holds the lock"
        );
        assert!(
            !reader.try_lock().await.expect("try_lock"),
            "a second daemon must not get the lock"
        );

        // a burst of acknowledgements within one interval: the latest is stored
        for p in [1000u64, 2000, 3000] {
            acked_tx.send(acked(p, p / 1000)).expect("send");
        }
        let mut got = None;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Some(s) = reader.load().await.expect("load") {
                got = Some(s.position.coord.pos);
                if got == Some(3000) {
                    break;
                }
            }
        }
        assert_eq!(
            got,
            Some(3000),
            "the latest acknowledged position is stored"
        );

        // an acknowledgement, then the pipeline ends: the final one is stored before exit
        acked_tx.send(acked(4000, 4)).expect("send");
        drop(acked_tx);
        tokio::time::timeout(Duration::from_secs(20), writer)
            .await
            .expect("the writer ends when the pipeline ends")
            .expect("join")
            .expect("the writer ends without error");
        let s = reader.load().await.expect("load").expect("stored");
        assert_eq!(
            s.position.coord,
            BinlogCoord {
                file: "binlog.000007".into(),
                pos: 4000
            }
        );
        assert_eq!(s.event_ts_ms, 1_700_000_000_000 + 4000);
        let mut root = root(f).await;
        use mysql_async::prelude::Queryable;
        root.query_drop(format!("DROP DATABASE `{schema}`"))
            .await
            .expect("drop");
    });
}
