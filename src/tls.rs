//! TLS settings for MySQL connections (`source.tls`, `checkpoint.tls`): the `ssl-mode` of the
//! MySQL clients. A leaf: imports nothing of the crate.

use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// Plain TCP (caching_sha2_password then uses the server's RSA key).
    #[default]
    Disabled,
    /// TLS, certificate not verified.
    Required,
    /// TLS, certificate chain verified against `ca_file`, host name not checked.
    VerifyCa,
    /// TLS, certificate chain and host name verified.
    VerifyIdentity,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(default)]
    pub mode: TlsMode,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}
