//! Server error numbers by name, and the one split between errors worth retrying (the
//! connection or the server is away for now) and errors that retrying cannot fix.

use thiserror::Error;

/// ER_DBACCESS_DENIED_ERROR
pub const ER_DBACCESS_DENIED: u16 = 1044;
/// ER_ACCESS_DENIED_ERROR (bad user or password)
pub const ER_ACCESS_DENIED: u16 = 1045;
/// ER_UNKNOWN_COM_ERROR (the server does not know the command, e.g. binlog dump is off)
pub const ER_UNKNOWN_COM: u16 = 1047;
/// ER_BAD_FIELD_ERROR (unknown column)
pub const ER_BAD_FIELD: u16 = 1054;
/// ER_TABLEACCESS_DENIED_ERROR
pub const ER_TABLEACCESS_DENIED: u16 = 1142;
/// ER_NO_SUCH_TABLE
pub const ER_NO_SUCH_TABLE: u16 = 1146;
/// ER_UNKNOWN_SYSTEM_VARIABLE
pub const ER_UNKNOWN_SYSTEM_VARIABLE: u16 = 1193;
/// ER_SPECIFIC_ACCESS_DENIED_ERROR (a missing privilege such as REPLICATION SLAVE)
pub const ER_SPECIFIC_ACCESS_DENIED: u16 = 1227;
/// ER_MASTER_FATAL_ERROR_READING_BINLOG (purged, unknown or diverged position)
pub const ER_SOURCE_FATAL_ERROR_READING_BINLOG: u16 = 1236;
/// ER_ACCESS_DENIED_NO_PASSWORD_ERROR (e.g. unix_socket/auth plugin refusal)
pub const ER_ACCESS_DENIED_NO_PASSWORD: u16 = 1698;
/// ER_SECURE_TRANSPORT_REQUIRED (MySQL; MariaDB sends 1105 with the same text)
pub const ER_SECURE_TRANSPORT_REQUIRED: u16 = 3159;
/// ER_SLAVE_SAME_ID / ER_SOURCE_HAS_SAME_ID (MySQL: another replica uses our server_id)
pub const ER_REPLICA_SAME_ID: u16 = 4052;

/// A login refusal: wrong user or password (or an auth plugin that refuses).
pub fn is_auth(code: u16) -> bool {
    matches!(code, ER_ACCESS_DENIED | ER_ACCESS_DENIED_NO_PASSWORD)
}

/// A missing grant: the server refuses the command and will keep refusing.
pub fn is_permission(code: u16) -> bool {
    matches!(
        code,
        ER_SPECIFIC_ACCESS_DENIED | ER_DBACCESS_DENIED | ER_TABLEACCESS_DENIED | ER_UNKNOWN_COM
    )
}

/// Transient (retry with backoff: the connection dropped, the server restarts or is
/// unreachable for now) vs definite (retrying gives the same answer: a refused login, a
/// missing grant, an unknown command, bad options). Server errors other than logins and
/// grants count as transient: a server that is shutting down or out of connections answers
/// with errors of its own.
pub fn is_transient(e: &mysql_async::Error) -> bool {
    match e {
        mysql_async::Error::Server(s) => !is_auth(s.code) && !is_permission(s.code),
        mysql_async::Error::Io(_) => true,
        mysql_async::Error::Driver(_) => true,
        mysql_async::Error::Other(_) => true,
        mysql_async::Error::Url(_) => false,
    }
}

/// A look-up that failed: the server's answer, or an answer binlogd cannot use.
#[derive(Debug, Error)]
pub enum QueryError {
    #[error(transparent)]
    Mysql(#[from] mysql_async::Error),
    #[error("{0}")]
    Unexpected(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: u16) -> mysql_async::Error {
        mysql_async::Error::Server(mysql_async::ServerError {
            code,
            message: "m".into(),
            state: "HY000".into(),
        })
    }

    #[test]
    fn transient_or_definite() {
        for c in [
            ER_ACCESS_DENIED,
            ER_ACCESS_DENIED_NO_PASSWORD,
            ER_SPECIFIC_ACCESS_DENIED,
            ER_DBACCESS_DENIED,
            ER_TABLEACCESS_DENIED,
            ER_UNKNOWN_COM,
        ] {
            assert!(!is_transient(&server(c)), "{c} must be definite");
        }
        for c in [1040u16, 1053, 2013, ER_SOURCE_FATAL_ERROR_READING_BINLOG] {
            assert!(is_transient(&server(c)), "{c} must be transient");
        }
        let io = mysql_async::Error::Io(mysql_async::IoError::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        )));
        assert!(is_transient(&io));
        assert!(is_auth(ER_ACCESS_DENIED) && !is_auth(ER_SPECIFIC_ACCESS_DENIED));
        assert!(is_permission(ER_UNKNOWN_COM) && !is_permission(ER_ACCESS_DENIED));
    }
}
