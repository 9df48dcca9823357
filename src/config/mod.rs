//! Configuration: a TOML file plus `BINLOGD__SECTION__KEY` environment overrides.
//!
//! Every struct denies unknown keys so a typo is an error that names the key, never a silently
//! ignored setting. Durations and sizes carry units (see [`crate::units`]). Passwords are [`Secret`]s.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use thiserror::Error;

use crate::sinks::SinksConfig;
use crate::source::config::SourceConfig;
use crate::tls::TlsMode;
use crate::units::{ByteSize, HumanDuration, Secret};

use crate::filter::TableFilter;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub source: SourceConfig,
    #[serde(default)]
    pub sinks: SinksConfig,
    #[serde(default)]
    pub pipeline: PipelineConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub checkpoint: crate::checkpoint::CheckpointConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub snapshot: crate::snapshot::config::SnapshotConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `host:port` of the HTTP endpoint (/metrics, /healthz, /readyz); "" disables it.
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    /// How often the lag in bytes to the server's position is measured (and, while catching
    /// up, progress is logged).
    #[serde(default = "default_lag_interval")]
    pub lag_interval: HumanDuration,
    /// Log catch-up progress while the lag is above this.
    #[serde(default = "default_progress_threshold")]
    pub progress_threshold: HumanDuration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: default_admin_listen(),
            lag_interval: default_lag_interval(),
            progress_threshold: default_progress_threshold(),
        }
    }
}

fn default_admin_listen() -> String {
    "127.0.0.1:9187".into()
}
fn default_lag_interval() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(5))
}
fn default_progress_threshold() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(30))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Pipeline name: identifies the stored position and the HA lock.
    #[serde(default = "default_pipeline_name")]
    pub name: String,
    /// Maximum decoded-but-unacknowledged bytes between source and sinks (backpressure).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: ByteSize,
    /// A batch is handed to the sinks when the stream has nothing more ready, or at this size.
    /// Larger batches amortise per-batch acknowledgements (Kafka, Redis) when catching up.
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: ByteSize,
    /// After SIGTERM/SIGINT, how long draining the sinks may take before binlogd exits anyway
    /// (exit code 1; the stored position stays at the last fully acknowledged transaction).
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: HumanDuration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            name: default_pipeline_name(),
            max_in_flight: default_max_in_flight(),
            shutdown_timeout: default_shutdown_timeout(),
            batch_max_bytes: default_batch_max_bytes(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Auto,
    Human,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default = "default_log_level")]
    pub level: String,
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: default_log_level(),
            format: LogFormat::Auto,
        }
    }
}

fn default_pipeline_name() -> String {
    "default".into()
}
fn default_max_in_flight() -> ByteSize {
    ByteSize(16 << 20)
}
fn default_batch_max_bytes() -> ByteSize {
    ByteSize(1 << 20)
}
fn default_shutdown_timeout() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(30))
}
fn default_log_level() -> String {
    "info".into()
}

impl Config {
    /// Loads `path`, applies `BINLOGD__…` environment overrides, and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text, path, std::env::vars())
    }

    /// Parses TOML text (with `path` used in messages) plus overrides from `env`.
    pub fn from_toml_str(
        text: &str,
        path: &Path,
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let perr = |message: String| ConfigError::Parse {
            path: path.to_owned(),
            message,
        };
        // Syntax first with the toml crate: its errors carry line and column.
        if let Err(e) = text.parse::<toml::Table>() {
            return Err(perr(format!("TOML syntax error: {e}")));
        }
        let env_map: std::collections::HashMap<String, String> =
            env.filter(|(k, _)| k.starts_with("BINLOGD__")).collect();
        let built = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("BINLOGD")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    .source(Some(env_map.into_iter().collect())),
            )
            .build()
            .map_err(|e| perr(e.to_string()))?;
        let cfg: Config = built
            .try_deserialize()
            .map_err(|e| perr(explain_serde(&e.to_string())))?;
        cfg.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        let s = &self.source;
        if s.server_id == 0 {
            return Err("source.server_id must not be 0; pick an id unique among the server's replicas, e.g. 4242".into());
        }
        if s.name.trim().is_empty() {
            return Err("source.name must not be empty; it names the server in events".into());
        }
        crate::mysql::opts::parse_url(s.url.expose()).map_err(|e| format!("source.url: {e}"))?;
        if s.password.is_some() && s.password_file.is_some() {
            return Err("source.password and source.password_file are both set; keep one".into());
        }
        // a missing or unreadable password file is a config mistake, found before connecting
        self.source_password()?;
        self.checkpoint_opts()?;
        if let Some(inc) = &s.include {
            if inc.is_empty() {
                return Err("source.include is an empty list, which would match no table; remove it to stream every table, or list db.table globs".into());
            }
        }
        TableFilter::new(s.include.as_deref(), &s.exclude)?;
        self.snapshot.validate()?;
        if let Some(u) = &self.checkpoint.url {
            crate::mysql::opts::parse_url(u.expose())
                .map_err(|e| format!("checkpoint.url: {e}"))?;
        }
        if !self
            .checkpoint
            .schema
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
            || self.checkpoint.schema.is_empty()
        {
            return Err(format!(
                "checkpoint.schema {:?} may only contain letters, digits and '_'",
                self.checkpoint.schema
            ));
        }
        if self.checkpoint.lock_lease.0 < std::time::Duration::from_secs(2) {
            return Err(format!(
                "checkpoint.lock_lease ({:?}) must be at least 2s",
                self.checkpoint.lock_lease
            ));
        }
        if s.read_timeout.0 <= s.heartbeat.0 {
            return Err(format!(
                "source.read_timeout ({:?}) must be longer than source.heartbeat ({:?}), or idle streams would be dropped",
                s.read_timeout, s.heartbeat
            ));
        }
        let tls = std::iter::once(("source.tls", &s.tls))
            .chain(self.checkpoint.tls.iter().map(|t| ("checkpoint.tls", t)));
        for (key, t) in tls {
            if matches!(t.mode, TlsMode::VerifyCa | TlsMode::VerifyIdentity) && t.ca_file.is_none()
            {
                return Err(format!(
                    "{key}.mode verifies the server certificate: set {key}.ca_file"
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        for n in self.sinks.names() {
            if !names.insert(n) {
                return Err(format!(
                    "two sinks are named {n:?}; sink names must be unique: rename one (names label metrics, logs and `replay --sinks`)"
                ));
            }
        }
        for r in &self.sinks.redis {
            r.validate()?;
        }
        for k in &self.sinks.kafka {
            k.validate()?;
        }
        if names.is_empty() {
            return Err(
                "no sink configured; add e.g. [[sinks.file]] name = \"debug\" path = \"-\"".into(),
            );
        }
        if self.pipeline.batch_max_bytes.0 < 4096
            || self.pipeline.batch_max_bytes.0 > self.pipeline.max_in_flight.0
        {
            return Err(format!(
                "pipeline.batch_max_bytes ({:?}) must be at least 4KiB and at most pipeline.max_in_flight ({:?})",
                self.pipeline.batch_max_bytes, self.pipeline.max_in_flight
            ));
        }
        if !self
            .pipeline
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        {
            return Err(format!(
                "pipeline.name {:?} may only contain letters, digits, '_', '-' and '.'",
                self.pipeline.name
            ));
        }
        Ok(())
    }

    /// Settings that differ from `running` and only take effect after a restart (SIGHUP
    /// applies `log.level` and `source.include/exclude` itself). Secrets compare by value.
    pub fn restart_needed(&self, running: &Config) -> Vec<&'static str> {
        let mut out = Vec::new();
        let strip = |c: &Config| {
            let mut s = c.source.clone();
            s.include = None;
            s.exclude = Vec::new();
            (
                format!("{s:?}"),
                s.url.expose().to_string(),
                s.password.map(|p| p.expose().to_string()),
            )
        };
        if strip(self) != strip(running) {
            out.push("source");
        }
        let pairs: [(&'static str, String, String); 5] = [
            (
                "sinks",
                format!("{:?}", self.sinks),
                format!("{:?}", running.sinks),
            ),
            (
                "pipeline",
                format!("{:?}", self.pipeline),
                format!("{:?}", running.pipeline),
            ),
            (
                "checkpoint",
                format!("{:?}", self.checkpoint),
                format!("{:?}", running.checkpoint),
            ),
            (
                "admin",
                format!("{:?}", self.admin),
                format!("{:?}", running.admin),
            ),
            (
                "log.format",
                format!("{:?}", self.log.format),
                format!("{:?}", running.log.format),
            ),
        ];
        for (name, a, b) in pairs {
            if a != b {
                out.push(name);
            }
        }
        out
    }

    /// Connection options for the checkpoint server (default: the source server).
    pub fn checkpoint_opts(&self) -> Result<mysql_async::Opts, String> {
        let cp = &self.checkpoint;
        match &cp.url {
            Some(url) => {
                let pw = if let Some(p) = &cp.password_file {
                    Some(crate::units::read_secret_file(
                        p,
                        "checkpoint.password_file",
                    )?)
                } else {
                    cp.password.clone()
                };
                let (tls, key) = match &cp.tls {
                    Some(t) => (t, "checkpoint.tls"),
                    None => (&self.source.tls, "source.tls"),
                };
                crate::mysql::opts::plain_opts_tls(url, pw.as_ref(), tls, key)
                    .map_err(|e| format!("checkpoint.url: {e}"))
            }
            None => crate::mysql::opts::opts_for(
                &self.source.url,
                self.source_password()?.as_ref(),
                &self.source.tls,
            ),
        }
    }

    /// The source password, from `password_file`, `password`, or the URL, in that order.
    pub fn source_password(&self) -> Result<Option<Secret>, String> {
        self.source.password()
    }
}

/// Adds the fix to serde's wording where it helps.
fn explain_serde(msg: &str) -> String {
    if msg.contains("unknown field") {
        format!("{msg}; remove or correct the key (see config/binlogd.example.toml for every key)")
    } else if msg.contains("invalid type") || msg.contains("invalid value") {
        format!("{msg}; write the value as the expected type (see config/binlogd.example.toml)")
    } else if msg.contains("missing field") {
        format!("{msg}; this key is required")
    } else {
        msg.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[source]
url = "mysql://cdc:topsecret@127.0.0.1:3306"
server_id = 4242
name = "shop"
include = ["shop.*"]

[[sinks.file]]
name = "debug"
path = "-"
"#;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_toml_str(
            text,
            Path::new("test.toml"),
            env.iter().map(|(a, b)| (a.to_string(), b.to_string())),
        )
    }

    #[test]
    fn loads_base_and_defaults() {
        let c = load(BASE, &[]).unwrap();
        assert_eq!(c.source.server_id, 4242);
        assert_eq!(c.source.heartbeat.0, std::time::Duration::from_secs(5));
        assert!(matches!(
            c.source.start,
            crate::binlog::position::StartPosition::Latest
        ));
        assert!(!format!("{c:?}").contains("topsecret"));
    }

    #[test]
    fn unknown_key_is_named() {
        let e = load(&format!("{BASE}\n[log]\nlevl = \"debug\"\n"), &[]).unwrap_err();
        let m = e.to_string();
        assert!(m.contains("levl") && m.contains("test.toml"), "{m}");
    }

    #[test]
    fn syntax_error_has_line() {
        let e = load("[source\nurl=1", &[]).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn env_overrides() {
        let c = load(BASE, &[("BINLOGD__SOURCE__SERVER_ID", "7")]).unwrap();
        assert_eq!(c.source.server_id, 7);
    }

    #[test]
    fn bad_duration_and_url() {
        let e = load(
            &BASE.replace("name = \"shop\"", "name = \"shop\"\nheartbeat = \"5\""),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("invalid duration"), "{e}");
        let e = load(&BASE.replace("mysql://", "postgres://"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("source.url"), "{e}");
        assert!(!e.contains("topsecret"), "{e}");
    }

    #[test]
    fn start_positions() {
        for (s, ok) in [
            ("start = \"earliest\"", true),
            ("start = { file = \"binlog.000003\", pos = 4 }", true),
            ("start = { gtid = \"0-1-5\" }", true),
            ("start = \"yesterday\"", false),
        ] {
            let r = load(
                &BASE.replace("name = \"shop\"", &format!("name = \"shop\"\n{s}")),
                &[],
            );
            assert_eq!(r.is_ok(), ok, "{s}: {r:?}");
        }
    }

    #[test]
    fn empty_include_and_duplicate_sinks() {
        assert!(load(&BASE.replace("[\"shop.*\"]", "[]"), &[]).is_err());
        let dup = format!("{BASE}\n[[sinks.file]]\nname = \"debug\"\npath = \"/tmp/x\"\n");
        assert!(load(&dup, &[]).unwrap_err().to_string().contains("unique"));
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    /// The documented example must stay loadable.
    #[test]
    fn example_config_loads() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/binlogd.example.toml");
        let text = std::fs::read_to_string(&p).unwrap();
        let c = Config::from_toml_str(&text, &p, std::iter::empty()).unwrap();
        assert_eq!(c.sinks.file.len(), 1);
        assert_eq!(c.pipeline.max_in_flight.0, 16 << 20);
    }
}
