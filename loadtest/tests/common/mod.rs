//! What the integration tests share: bounded runs of command lines, and sinks.

use std::time::Duration;

use clap::Parser as _;
use loadtest::cli::{Cli, Command};
use loadtest::report::Report;
use loadtest::sink::Sink;

/// Every test's run must end well within this.
pub const BOUND: Duration = Duration::from_secs(60);

/// Parses a command line (words split on whitespace).
pub fn command(line: &str) -> Command {
    let argv = std::iter::once("loadtest").chain(line.split_whitespace());
    Cli::try_parse_from(argv)
        .unwrap_or_else(|e| panic!("{line}: {e}"))
        .command
}

/// Runs a load command line, failing the test if it does not end within [`BOUND`].
pub async fn run(line: &str) -> anyhow::Result<Report> {
    tokio::time::timeout(BOUND, loadtest::run_load(command(line)))
        .await
        .unwrap_or_else(|_| panic!("{line} did not end within {BOUND:?}"))
}

pub async fn run_ok(line: &str) -> Report {
    run(line).await.unwrap_or_else(|e| panic!("{line}: {e:#}"))
}

/// Starts a sink with the options of `loadtest sink`.
pub async fn sink(line: &str) -> Sink {
    let Command::Sink(a) = command(&format!("sink {line}")) else {
        unreachable!()
    };
    Sink::start(&a).await.unwrap()
}
