//! Connection options: `mysql://` URLs (validated, redacted), passwords, TLS, and what a
//! failed TLS or login attempt means.

use mysql_async::{Opts, OptsBuilder, SslOpts};
use std::time::Duration;

use crate::tls::{TlsConfig, TlsMode};
use crate::units::Secret;

/// Validates a `mysql://` URL. The error never contains the password.
pub fn parse_url(url: &str) -> Result<Opts, String> {
    if !url.starts_with("mysql://") {
        return Err(format!(
            "{:?} is not a mysql:// URL (expected mysql://user:password@host:port)",
            redact_url(url)
        ));
    }
    Opts::from_url(url).map_err(|e| {
        let msg = e.to_string();
        let msg = match url_password(url) {
            Some(p) if !p.is_empty() => msg.replace(p, "***"),
            _ => msg,
        };
        format!("{:?} is not a valid URL: {msg}", redact_url(url))
    })
}

fn url_password(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let auth = rest.split_once('@')?.0;
    auth.split_once(':').map(|(_, p)| p)
}

/// The URL with its password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    match url_password(url) {
        Some(p) if !p.is_empty() => url.replacen(&format!(":{p}@"), ":***@", 1),
        _ => url.to_string(),
    }
}

/// Options for a plain (non-replication) connection from a URL and optional password.
pub fn plain_opts(url: &Secret, password: Option<&Secret>) -> Result<Opts, String> {
    let base = parse_url(url.expose())?;
    let mut b = OptsBuilder::from_opts(base)
        .prefer_socket(false)
        .tcp_keepalive(Some(Duration::from_secs(10)));
    if let Some(p) = password {
        b = b.pass(Some(p.expose().to_string()));
    }
    Ok(b.into())
}

/// Connection options for the source (and the checkpoint server when it is the source).
pub fn opts_for(url: &Secret, password: Option<&Secret>, tls: &TlsConfig) -> Result<Opts, String> {
    let base = parse_url(url.expose())?;
    let mut b = OptsBuilder::from_opts(base)
        .prefer_socket(false)
        .tcp_keepalive(Some(Duration::from_secs(10)))
        .stmt_cache_size(0)
        .wait_timeout(Some(28_800));
    if let Some(p) = password {
        b = b.pass(Some(p.expose().to_string()));
    }
    Ok(with_tls(b, tls, "source.tls")?.into())
}

/// Options for a plain connection (the checkpoint server's own URL) with TLS settings `tls`
/// (`key` names them in errors).
pub fn plain_opts_tls(
    url: &Secret,
    password: Option<&Secret>,
    tls: &TlsConfig,
    key: &str,
) -> Result<Opts, String> {
    let b = OptsBuilder::from_opts(plain_opts(url, password)?);
    Ok(with_tls(b, tls, key)?.into())
}

/// Applies `tls` (the `ssl-mode` of the MySQL clients) to `b`.
fn with_tls(b: OptsBuilder, tls: &TlsConfig, key: &str) -> Result<OptsBuilder, String> {
    Ok(match tls.mode {
        TlsMode::Disabled => b,
        TlsMode::Required => b.ssl_opts(Some(
            SslOpts::default()
                .with_danger_accept_invalid_certs(true)
                .with_danger_skip_domain_validation(true),
        )),
        TlsMode::VerifyCa | TlsMode::VerifyIdentity => {
            let ca = tls
                .ca_file
                .clone()
                .ok_or_else(|| format!("{key}.ca_file is required for this {key}.mode"))?;
            if !ca.exists() {
                return Err(format!("{key}.ca_file {} does not exist", ca.display()));
            }
            b.ssl_opts(Some(
                SslOpts::default()
                    .with_root_certs(vec![ca.into()])
                    .with_danger_skip_domain_validation(tls.mode == TlsMode::VerifyCa),
            ))
        }
    })
}

/// A TLS problem in a connection attempt: the handshake failed (certificate not signed by the
/// CA, host name not in the certificate, no TLS on the server) or the server refuses plain
/// connections. `None` for any other error.
pub fn tls_problem(e: &mysql_async::Error) -> Option<TlsProblem> {
    match e {
        mysql_async::Error::Io(mysql_async::IoError::Tls(t)) => {
            Some(TlsProblem::Handshake(t.to_string()))
        }
        mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer) => {
            Some(TlsProblem::NoServerTls)
        }
        // MySQL ER_SECURE_TRANSPORT_REQUIRED (3159); MariaDB uses 1105 with the same text
        mysql_async::Error::Server(s)
            if s.code == super::errors::ER_SECURE_TRANSPORT_REQUIRED
                || s.message.contains("insecure transport") =>
        {
            Some(TlsProblem::Required(s.message.clone()))
        }
        _ => None,
    }
}

/// For "access denied" on a plain (non-TLS) connection: MariaDB answers a client without TLS
/// that way when it requires TLS (`require_secure_transport`, an account with `REQUIRE SSL`).
pub fn plain_auth_hint(opts: &Opts, key: &str) -> &'static str {
    if opts.ssl_opts().is_some() {
        return "";
    }
    match key {
        "source.tls" => "; if the server requires TLS (require_secure_transport or REQUIRE SSL: MariaDB then also answers \"access denied\"), set source.tls.mode and source.tls.ca_file",
        _ => "; if the server requires TLS (require_secure_transport or REQUIRE SSL: MariaDB then also answers \"access denied\"), set checkpoint.tls (or source.tls)",
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsProblem {
    Handshake(String),
    NoServerTls,
    Required(String),
}

impl TlsProblem {
    /// What went wrong and the fix; `key` names the TLS settings (`source.tls`, …).
    pub fn describe(&self, key: &str) -> String {
        match self {
            TlsProblem::Handshake(m) => format!(
                "TLS handshake failed, the server certificate was not accepted ({m}). Fix: \
                 {key}.ca_file must be the CA certificate that signed the server's certificate; \
                 with {key}.mode = \"verify_identity\" the host in the URL must be a name or IP \
                 address the certificate lists (or use \"verify_ca\")"
            ),
            TlsProblem::NoServerTls => format!(
                "the server does not support TLS but {key}.mode asks for it. Fix: enable TLS on \
                 the server (ssl_cert, ssl_key, ssl_ca) or set {key}.mode = \"disabled\""
            ),
            TlsProblem::Required(m) => format!(
                "the server requires TLS ({m}). Fix: set {key}.mode = \"verify_identity\" (or \
                 \"verify_ca\"/\"required\") with {key}.ca_file"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_redaction() {
        assert_eq!(redact_url("mysql://u:p4ss@h:1"), "mysql://u:***@h:1");
        let e = parse_url("postgres://u:p4ss@h").unwrap_err();
        assert!(!e.contains("p4ss"), "{e}");
        assert!(parse_url("mysql://u:p4ss@127.0.0.1:3306").is_ok());
    }
}
