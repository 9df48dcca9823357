//! The binlog's own vocabulary, shared by every stage: positions and GTID sets, the server
//! flavor, and named event-type codes. A leaf: imports nothing of the crate.

pub mod event_type;
pub mod position;

pub use position::{BinlogCoord, GtidSet, Position};

/// Which server family writes the binlog (their GTIDs and some events differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    MySql,
    MariaDb,
}

/// One GTID found at a Kafka partition's tail: the last row change this pipeline wrote there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tail {
    pub topic: String,
    pub partition: i32,
    /// `uuid[:tag]:n` or `domain-server-seq`.
    pub gtid: String,
    /// The source server that message was read from (`binlogd.server`).
    pub server: String,
}
