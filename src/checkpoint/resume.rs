//! Resume validation: whether a stored position can be used on the server binlogd is about to
//! stream from (GTID mode, server identity).

use crate::binlog::position::{GtidSet, Position};
use crate::binlog::Flavor;
use crate::mysql::server::ServerInfo;

/// Checks a stored position against the server it is about to be used on.
pub fn validate_stored(
    stored: &Position,
    info: &ServerInfo,
    stored_uuid: Option<&str>,
) -> Result<(), String> {
    match (&stored.gtid, info.flavor) {
        (Some(GtidSet::MySql(_)), Flavor::MariaDb) | (Some(GtidSet::MariaDb(_)), Flavor::MySql) => {
            return Err(format!(
                "the stored position has a {} GTID set but the source is {}: GTID mode mismatch. \
                 Fix: `binlogd position set` (or reset) for this server",
                if info.flavor == Flavor::MySql { "MariaDB" } else { "MySQL" },
                info.version
            ))
        }
        (Some(GtidSet::MySql(_)), Flavor::MySql) if info.gtid_mode.as_deref() != Some("ON") => {
            return Err(String::from(
                "the stored position is a GTID set but the source runs with gtid_mode OFF: GTID mode mismatch. \
                 Fix: set gtid_mode=ON, or `binlogd position set --file … --pos …`",
            ))
        }
        (None, Flavor::MySql) => {
            if let (Some(a), Some(b)) = (stored_uuid, info.server_uuid.as_deref()) {
                if a != b {
                    return Err(format!(
                        "the stored file:pos position belongs to server {a}, but the source is {b}; without GTIDs a \
                         position cannot move between servers. Fix: `binlogd position set` for the new server"
                    ));
                }
            }
        }
        _ => {}
    }
    Ok(())
}
