//! The `floe` command: run the pipeline, check a config, try a plugin, or generate test data.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio::sync::watch;
use tracing::info;
use tracing_subscriber::EnvFilter;

use floe::config::Config;
use floe::generate::{self, Workload};
use floe::pipeline::Pipeline;

#[derive(Parser)]
#[command(
    name = "floe",
    version,
    about = "Streams Debezium change events from Kafka into Snowflake"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipeline until SIGINT or SIGTERM.
    Run {
        /// The TOML config file.
        #[arg(short, long, env = "FLOE_CONFIG", default_value = "floe.toml")]
        config: PathBuf,
        /// Exit (0) once no message arrived for this many seconds and all was loaded.
        #[arg(long, value_name = "SECS")]
        exit_when_idle: Option<u64>,
    },
    /// Validate a config file (with the environment applied) and print it, secrets masked.
    CheckConfig {
        #[arg(short, long, env = "FLOE_CONFIG", default_value = "floe.toml")]
        config: PathBuf,
    },
    /// Work with Wasm plugins.
    Plugin {
        #[command(subcommand)]
        what: PluginCommand,
    },
    /// Generate inserts, updates, deletes or a continuous load on the source table.
    Generate {
        /// PostgreSQL connection string of the source database.
        #[arg(
            long,
            env = "DATABASE_URL",
            default_value = "host=127.0.0.1 port=5433 user=postgres password=postgres dbname=postgres"
        )]
        database_url: String,
        /// Seed of the random values (same seed, same workload).
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[command(subcommand)]
        what: GenerateWhat,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Run a plugin on Debezium events from a file (one message value per line) and print each
    /// event's decision and edits as a JSON line.
    Test {
        /// The plugin component.
        #[arg(long)]
        plugin: PathBuf,
        /// The plugin's own settings: a TOML file (as under `[plugins.chain.config]`) or JSON.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Debezium events, one message value per line.
        #[arg(long)]
        events: PathBuf,
        /// Capabilities to grant, as in the chain config (clock, stderr, env:NAME).
        #[arg(long = "grant")]
        grants: Vec<String>,
        /// Events per plugin call.
        #[arg(long, default_value_t = 100)]
        batch: usize,
        #[arg(long, default_value_t = 64)]
        memory_mb: u64,
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
        #[arg(long)]
        fuel: Option<u64>,
    },
}

#[derive(Subcommand)]
enum GenerateWhat {
    /// Insert new transactions.
    Insert {
        #[arg(short = 'n', long, default_value_t = 100)]
        count: u64,
    },
    /// Update random existing transactions.
    Update {
        #[arg(short = 'n', long, default_value_t = 50)]
        count: u64,
    },
    /// Delete random existing transactions.
    Delete {
        #[arg(short = 'n', long, default_value_t = 10)]
        count: u64,
    },
    /// A continuous mix of all of them.
    Load {
        /// Stop after this many operations.
        #[arg(long, default_value_t = u64::MAX)]
        ops: u64,
        /// Operations per second (unlimited when absent).
        #[arg(long)]
        rate: Option<f64>,
        /// Stop after this many seconds.
        #[arg(long)]
        seconds: Option<u64>,
    },
}

fn main() -> anyhow::Result<()> {
    // `.env` supplies the guide's SNOWFLAKE_* variables; a missing file is fine.
    let _ = dotenvy::dotenv();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("FLOE_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Run {
                config,
                exit_when_idle,
            } => run(config, exit_when_idle.map(Duration::from_secs)).await,
            Command::CheckConfig { config } => {
                let cfg = Config::load(&config)?;
                println!("{}", cfg.masked());
                Ok(())
            }
            Command::Plugin {
                what:
                    PluginCommand::Test {
                        plugin,
                        config,
                        events,
                        grants,
                        batch,
                        memory_mb,
                        timeout_ms,
                        fuel,
                    },
            } => {
                let config = match config {
                    None => toml::Table::new(),
                    Some(path) => plugin_settings(&path)?,
                };
                let spec = floe::config::PluginConfig {
                    name: None,
                    path: plugin,
                    tables: Vec::new(),
                    memory_mb,
                    timeout_ms,
                    fuel,
                    grants,
                    config,
                };
                let stdout = std::io::stdout();
                // WASI's sync bindings may not block inside the async context.
                let (kept, dropped, rejected, undecodable) = tokio::task::block_in_place(|| {
                    floe::plugin::trial::run(&spec, &events, batch, &mut stdout.lock())
                })?;
                eprintln!(
                    "kept={kept} dropped={dropped} rejected={rejected} undecodable={undecodable}"
                );
                Ok(())
            }
            Command::Generate {
                database_url,
                seed,
                what,
            } => {
                let workload = match what {
                    GenerateWhat::Insert { count } => Workload::Insert { count },
                    GenerateWhat::Update { count } => Workload::Update { count },
                    GenerateWhat::Delete { count } => Workload::Delete { count },
                    GenerateWhat::Load { ops, rate, seconds } => {
                        Workload::Load { ops, rate, seconds }
                    }
                };
                let done = generate::run(&database_url, workload, seed).await?;
                println!(
                    "inserted={} updated={} deleted={}",
                    done.inserts, done.updates, done.deletes
                );
                Ok(())
            }
        }
    })
}

/// A plugin's settings file: TOML, or JSON when it ends in `.json`.
fn plugin_settings(path: &std::path::Path) -> anyhow::Result<toml::Table> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "json") {
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        let t: toml::Table = serde_json::from_value(v)
            .with_context(|| format!("{} must hold a JSON object", path.display()))?;
        Ok(t)
    } else {
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))
    }
}

async fn run(config: PathBuf, exit_when_idle: Option<Duration>) -> anyhow::Result<()> {
    let cfg = Config::load(&config)?;
    // Libraries quote what they refuse (librdkafka: a property and its value), so the error
    // that stops floe is printed with every configured secret masked.
    let secrets = cfg.known_secrets();
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        let signal = wait_for_signal().await;
        info!(signal, "stopping: finishing the batch in flight");
        let _ = stop_tx.send(true);
    });
    let result = match Pipeline::new(cfg, Some(config)) {
        Ok(pipeline) => pipeline.run(stop_rx, exit_when_idle).await,
        Err(e) => Err(e),
    };
    result.map_err(|e| anyhow::anyhow!(secrets.mask(&format!("{e:#}"))))
}

async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers there is nothing to wait for; run until killed.
        std::future::pending::<()>().await;
        unreachable!()
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
