//! The `binlogd` binary: command line, logging, signals, exit codes. anyhow lives only here.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use binlogd::config::{Config, LogFormat};
use binlogd::event::SourceInfo;
use binlogd::pipeline::Pipeline;
use binlogd::sinks::file::FileSink;
use binlogd::sinks::Sink;
use binlogd::source::conn::{self, Severity};
use binlogd::source::{Source, SourceStats};

#[derive(Parser)]
#[command(
    name = "binlogd",
    version,
    about = "MySQL/MariaDB change-data-capture daemon"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Stream row changes to the configured sinks until SIGTERM/SIGINT.
    Run {
        #[arg(short, long, default_value = "config/binlogd.toml")]
        config: PathBuf,
        /// Exit (0) after handing on every transaction up to this FILE:POS (bounded runs,
        /// benchmarks).
        #[arg(long, value_name = "FILE:POS")]
        stop_at: Option<binlogd::source::position::BinlogCoord>,
    },
    /// Validate the config, connect, and check server settings and privileges.
    Check {
        #[arg(short, long, default_value = "config/binlogd.toml")]
        config: PathBuf,
    },
    /// Show or move the stored position (checkpoint).
    Position {
        #[arg(short, long, default_value = "config/binlogd.toml")]
        config: PathBuf,
    },
    /// Re-send a range of the binlog to chosen sinks without moving the stored position.
    Replay {
        #[arg(short, long, default_value = "config/binlogd.toml")]
        config: PathBuf,
    },
}

/// Exit codes: 0 ok, 1 runtime failure, 2 bad configuration.
const EXIT_RUNTIME: u8 = 1;
const EXIT_CONFIG: u8 = 2;

fn init_logging(cfg: Option<&Config>) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let level = cfg
        .map(|c| c.log.level.clone())
        .unwrap_or_else(|| "info".into());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let format = cfg.map(|c| c.log.format).unwrap_or_default();
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Human => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        let _ = b.json().flatten_event(true).try_init();
    } else {
        let _ = b.try_init();
    }
}

fn load_config(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("binlogd: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("binlogd: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    rt.block_on(async {
        match cli.cmd {
            Cmd::Run { config, stop_at } => {
                let cfg = match load_config(&config) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                init_logging(Some(&cfg));
                match run(cfg, stop_at).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        error!("{e:#}");
                        eprintln!("binlogd: {e:#}");
                        ExitCode::from(EXIT_RUNTIME)
                    }
                }
            }
            Cmd::Check { config } => {
                let cfg = match load_config(&config) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                init_logging(None);
                check(cfg).await
            }
            Cmd::Position { .. } | Cmd::Replay { .. } => {
                eprintln!("binlogd: position and replay need the checkpoint store, which this build does not have yet");
                ExitCode::from(EXIT_RUNTIME)
            }
        }
    })
}

async fn check(cfg: Config) -> ExitCode {
    let cfg = Arc::new(cfg);
    println!("config: ok ({} sink(s))", cfg.sinks.file.len());
    println!("source: {}", conn::redact_url(cfg.source.url.expose()));
    let (src, findings) = match Source::connect(cfg.clone()).await {
        Ok(x) => x,
        Err(e) => {
            println!("error: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    println!(
        "server: {} (server_id {})",
        src.info.version, src.info.server_id
    );
    let mut errors = 0;
    let mut all = findings;
    match src.conn().await {
        Ok(mut c) => {
            match conn::check_privileges(&mut c).await {
                Ok(f) => all.extend(f),
                Err(e) => all.push(conn::Finding {
                    severity: Severity::Error,
                    message: format!("cannot read grants: {e}"),
                }),
            }
            match conn::replica_id_clash(&mut c, &src.info, cfg.source.server_id).await {
                Ok(Some(m)) => all.push(conn::Finding {
                    severity: Severity::Error,
                    message: m,
                }),
                Ok(None) => {}
                Err(e) => all.push(conn::Finding {
                    severity: Severity::Warning,
                    message: format!("cannot list replicas: {e}"),
                }),
            }
            if let Err(e) = conn::binlog_files(&mut c).await {
                all.push(conn::Finding {
                    severity: Severity::Error,
                    message: format!("SHOW BINARY LOGS failed ({e}); GRANT REPLICATION CLIENT"),
                });
            }
        }
        Err(e) => all.push(conn::Finding {
            severity: Severity::Error,
            message: e.to_string(),
        }),
    }
    for f in &all {
        match f.severity {
            Severity::Error => {
                errors += 1;
                println!("error: {}", f.message);
            }
            Severity::Warning => println!("warning: {}", f.message),
        }
    }
    if errors == 0 {
        println!("check: ok");
        ExitCode::SUCCESS
    } else {
        println!("check: {errors} problem(s)");
        ExitCode::from(EXIT_RUNTIME)
    }
}

async fn run(cfg: Config, stop_at: Option<binlogd::source::position::BinlogCoord>) -> Result<()> {
    let cfg = Arc::new(cfg);
    let (src, findings) = Source::connect(cfg.clone()).await?;
    let mut fatal = Vec::new();
    for f in findings {
        match f.severity {
            Severity::Error => fatal.push(f.message),
            Severity::Warning => warn!("{}", f.message),
        }
    }
    if !fatal.is_empty() {
        anyhow::bail!(
            "the source server is not set up for binlogd:\n  - {}",
            fatal.join("\n  - ")
        );
    }
    info!(server = %src.info.version, flavor = ?src.info.flavor, "connected to source");
    let info = SourceInfo {
        name: cfg.source.name.clone(),
    };
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    for f in &cfg.sinks.file {
        sinks.push(Box::new(FileSink::open(f, info.clone())?));
    }
    let start = src.resolve_start(None).await?;
    info!(file = %start.coord, gtid = ?start.gtid.as_ref().map(|g| g.to_string()), "start position");
    let mut decoder = src.new_decoder()?;
    decoder.stop_at = stop_at;
    let (tx, rx) = mpsc::channel(2);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (acked_tx, _acked_rx) = watch::channel(None);
    let pipeline =
        tokio::spawn(Pipeline::new(cfg.pipeline.max_in_flight.0 as usize).run(rx, sinks, acked_tx));
    let stats = Arc::new(SourceStats::default());
    let source_task = tokio::spawn(async move {
        let r = src.run(&mut decoder, start, tx, stop_rx, stats).await;
        (r, decoder)
    });
    let signals = tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutting down: draining sinks");
        let _ = stop_tx.send(true);
        // keep the sender alive until the process ends
        std::future::pending::<()>().await;
    });
    let (sr, _decoder) = source_task.await.context("source task")?;
    let pr = pipeline.await.context("pipeline task")?;
    signals.abort();
    sr?;
    pr?;
    info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
