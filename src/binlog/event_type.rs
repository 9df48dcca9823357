//! Binlog event-type codes (the byte at offset 4 of every event header), by name. MySQL's are
//! in `libbinlogevents/include/binlog_event.h`, MariaDB's own (≥ 160) in `sql/log_event.h`.

pub const QUERY: u8 = 2;
pub const STOP: u8 = 3;
pub const ROTATE: u8 = 4;
pub const INTVAR: u8 = 5;
pub const RAND: u8 = 13;
pub const USER_VAR: u8 = 14;
pub const FORMAT_DESCRIPTION: u8 = 15;
pub const XID: u8 = 16;
pub const TABLE_MAP: u8 = 19;
pub const WRITE_ROWS_V1: u8 = 23;
pub const UPDATE_ROWS_V1: u8 = 24;
pub const DELETE_ROWS_V1: u8 = 25;
pub const INCIDENT: u8 = 26;
pub const HEARTBEAT: u8 = 27;
pub const IGNORABLE: u8 = 28;
pub const ROWS_QUERY: u8 = 29;
pub const WRITE_ROWS: u8 = 30;
pub const UPDATE_ROWS: u8 = 31;
pub const DELETE_ROWS: u8 = 32;
pub const GTID: u8 = 33;
pub const ANONYMOUS_GTID: u8 = 34;
pub const PREVIOUS_GTIDS: u8 = 35;
pub const TRANSACTION_CONTEXT: u8 = 36;
pub const VIEW_CHANGE: u8 = 37;
pub const XA_PREPARE: u8 = 38;
pub const PARTIAL_UPDATE_ROWS: u8 = 39;
pub const TRANSACTION_PAYLOAD: u8 = 40;
pub const HEARTBEAT_V2: u8 = 41;
pub const GTID_TAGGED: u8 = 42;

/// MariaDB: the statement text before its rows events (`binlog_annotate_row_events`).
pub const MARIADB_ANNOTATE_ROWS: u8 = 160;
pub const MARIADB_BINLOG_CHECKPOINT: u8 = 161;
pub const MARIADB_GTID: u8 = 162;
pub const MARIADB_GTID_LIST: u8 = 163;
pub const MARIADB_START_ENCRYPTION: u8 = 164;
pub const MARIADB_QUERY_COMPRESSED: u8 = 165;
pub const MARIADB_WRITE_ROWS_COMPRESSED_V1: u8 = 166;
pub const MARIADB_UPDATE_ROWS_COMPRESSED_V1: u8 = 167;
pub const MARIADB_DELETE_ROWS_COMPRESSED_V1: u8 = 168;
pub const MARIADB_WRITE_ROWS_COMPRESSED: u8 = 169;
pub const MARIADB_UPDATE_ROWS_COMPRESSED: u8 = 170;
pub const MARIADB_DELETE_ROWS_COMPRESSED: u8 = 171;
