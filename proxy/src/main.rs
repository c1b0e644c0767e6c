//! `takgate`: wires config, listeners, signals and drain. Everything else lives in the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use takgate::app::App;
use takgate::config::{Config, LogConfig, LogFormat};
use tokio::signal::unix::{signal, SignalKind};

#[derive(Parser, Debug)]
#[command(
    name = "takgate",
    version,
    about = "Edge proxy for OpenTAK Server: web UI, API, Socket.IO and TLS, in place of nginx"
)]
struct Cli {
    /// TOML config file. Without it takgate runs on built-in defaults (HTTP on :8080 in front
    /// of OTS at 127.0.0.1:8081, admin on :9100).
    #[arg(long, short = 'c', global = true)]
    config: Option<PathBuf>,
    /// Write the bound addresses as JSON to this file once every listener is bound.
    #[arg(long)]
    bound_addrs: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate the config (certificates and keys included) and print the effective
    /// listeners and routes, like `nginx -t`.
    Check,
}

/// Exit code for a bad config or command line (sysexits EX_USAGE / EX_CONFIG style).
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("takgate: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_tracing(&config.log);
    let warnings = config.warnings();
    if !matches!(cli.command, Some(Command::Check)) {
        for w in &warnings {
            tracing::warn!("{w}");
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // The blocking pool only reads files (UI files not in the cache, certificates): a
        // burst of cache misses queues for a few threads instead of starting hundreds, each
        // with its own stack and malloc arena that would stay after the burst.
        .max_blocking_threads(16)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("takgate: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Built inside the runtime: the upstream connection pools need its timer.
    let app = match runtime.block_on(async { App::new(config, prometheus::Registry::new()) }) {
        Ok(app) => app,
        Err(e) => {
            eprintln!("takgate: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // Test builds only (feature `test-hooks`, which no release build enables): the first
    // connection on each listener named in TAKGATE_TEST_INJECT_PANIC (comma-separated) panics,
    // for tests/tests/panics.rs to show that the built binary unwinds and keeps serving.
    #[cfg(feature = "test-hooks")]
    for listener in std::env::var("TAKGATE_TEST_INJECT_PANIC")
        .unwrap_or_default()
        .split(',')
        .filter(|l| !l.is_empty())
    {
        app.panics().inject_panic(listener);
    }
    if matches!(cli.command, Some(Command::Check)) {
        for w in &warnings {
            println!("warning: {w}");
        }
        println!(
            "takgate: configuration {} is valid",
            cli.config
                .as_deref()
                .map_or("(built-in defaults)".to_owned(), |p| p
                    .display()
                    .to_string())
        );
        print!("{}", app.describe());
        return ExitCode::SUCCESS;
    }
    runtime.spawn(takgate::allocator::trim_released(app.memory().clone()));
    let ran = runtime.block_on(run(app, cli.bound_addrs.as_deref()));
    // Connections still open after the drain are dropped with the runtime; a file read stuck
    // in the blocking pool must not hold the exit up.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("takgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: Option<&Path>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => Ok(Config::default()),
    }
}

async fn run(app: App, bound_addrs: Option<&Path>) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let bound = app.bind()?;
    let addrs = app.start(bound)?;
    if let Some(path) = bound_addrs {
        write_atomically(path, &serde_json::to_vec_pretty(&addrs)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "takgate ready");
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            // Not awaited: signals are still handled while the files are read.
            _ = hup.recv() => drop(app.reload_tls()),
        }
    }
    tracing::info!("shutting down: no new connections; finishing requests in flight");
    // A second SIGTERM or SIGINT (an impatient operator, a supervisor's retry) cuts the drain
    // short, as with nginx's fast shutdown; waiting out the grace is what SIGKILL is for.
    tokio::select! {
        drained = app.shutdown() => {
            if drained {
                tracing::info!("shutdown complete");
            } else {
                tracing::warn!("shutdown grace expired; closing the connections still open");
            }
        }
        _ = term.recv() => tracing::warn!("second SIGTERM: closing the connections still open"),
        _ = int.recv() => tracing::warn!("second SIGINT: closing the connections still open"),
    }
    Ok(())
}

/// A reader polling for the file never sees it half-written.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, path)
}

fn init_tracing(log: &LogConfig) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| log.level.env_filter());
    // Colour codes only for a person at a terminal: in a file or a log collector they are noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match log.format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}
