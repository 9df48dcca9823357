//! What `binlogd check` (and startup) report: a problem or advice, with its severity. A leaf.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The server (or a sink) is not set up for binlogd: exit code 1.
    Error,
    /// A mistake in the config that only the server can reveal (e.g. a key template naming a
    /// column the table does not have): exit code 2, like any other config mistake.
    ConfigError,
    Warning,
}

#[derive(Debug, Clone)]
pub struct Finding {
    pub severity: Severity,
    pub message: String,
}
