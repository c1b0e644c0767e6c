//! loadtest: TAK-realistic load for takgate, nginx and direct connections, on loopback.
//!
//! - `cot`: CoT clients over mutual TLS (or plain TCP) at a rate, with templated ATAK events,
//!   timing echoes ([`cot_client`], [`cotgen`]);
//! - `http` and `static`: keep-alive HTTP at a fixed arrival rate (open model) or at maximum
//!   rate ([`http_client`], [`schedule`]);
//! - `ws`: WebSocket clients timing echoes ([`ws_client`]);
//! - `sink`: a CoT sink/echo and an HTTP + WebSocket echo server ([`sink`]);
//! - `link`: a relay that emulates a slow link, delay and bandwidth per direction ([`link`]);
//! - `certs`: a PKI for the server under test and the clients ([`tls`]).
//!
//! Every run reports HDR latency percentiles, throughput, errors by kind and connection setup
//! times ([`report`]), with a progress line every second ([`progress`]).

pub mod cli;
pub mod cot_client;
pub mod cotgen;
pub mod http_client;
pub mod link;
pub mod net;
pub mod progress;
pub mod report;
pub mod schedule;
pub mod sink;
pub mod stats;
pub mod streams;
pub mod target;
pub mod tls;
pub mod ws_client;

use cli::{Cli, Command, RunArgs};
use report::Report;

/// The bounds and output options of a load subcommand (`None` for `sink` and `certs`).
pub fn run_args(cmd: &Command) -> Option<&RunArgs> {
    match cmd {
        Command::Cot(a) => Some(&a.run),
        Command::Http(a) => Some(&a.run),
        Command::Ws(a) => Some(&a.run),
        Command::Static(a) => Some(&a.run),
        Command::Sink(_) | Command::Link(_) | Command::Certs(_) => None,
    }
}

/// Runs a load subcommand and returns its report, printing only progress lines.
pub async fn run_load(cmd: Command) -> anyhow::Result<Report> {
    stats::epoch();
    match cmd {
        Command::Cot(a) => cot_client::run(a).await,
        Command::Http(a) => http_client::run(a, "http").await,
        Command::Static(a) => http_client::run(a.into_http(), "static").await,
        Command::Ws(a) => ws_client::run(a).await,
        Command::Sink(_) | Command::Link(_) | Command::Certs(_) => {
            anyhow::bail!("sink, link and certs are not load runs")
        }
    }
}

/// Everything `main` does once the runtime is up.
pub async fn main_async(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Sink(a) => sink::run(a).await,
        Command::Link(a) => link::run(a).await,
        Command::Certs(a) => {
            let pki = tls::Pki::generate(&a.out, a.clients)?;
            println!("{}", serde_json::to_string_pretty(&pki)?);
            Ok(())
        }
        cmd => {
            let run = run_args(&cmd).cloned();
            let report = run_load(cmd).await?;
            if let Some(run) = run {
                progress::emit(&report, &run)?;
            }
            Ok(())
        }
    }
}
