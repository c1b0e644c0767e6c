//! Command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::cotgen::Payload;
use crate::schedule::Rate;

#[derive(Debug, Parser)]
#[command(
    name = "loadtest",
    version,
    about = "TAK-realistic load for takgate (and nginx, and direct): CoT over mutual TLS, HTTP, \
             WebSocket, static files. Loopback targets only; every run is bounded in time and count."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Runtime worker threads (default: one per core). Pin the process with taskset to keep
    /// load and server on separate cores.
    #[arg(long, global = true)]
    pub threads: Option<usize>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// CoT clients over mutual TLS (or plain TCP) sending position reports at a rate.
    Cot(CotArgs),
    /// HTTP requests at a fixed arrival rate (open model) or at maximum rate, keep-alive.
    Http(HttpArgs),
    /// WebSocket clients sending messages and timing their echoes.
    Ws(WsArgs),
    /// GETs of a list of URLs (a small file and a large asset), with throughput in MB/s.
    Static(StaticArgs),
    /// A loopback CoT sink/echo (TCP, TLS, or OTS's TLS port with --ots), or an HTTP +
    /// WebSocket echo server.
    Sink(SinkArgs),
    /// A TCP relay that emulates a slow link: delay and bandwidth per direction, loopback only.
    Link(LinkArgs),
    /// Writes a CA, a server certificate (localhost, 127.0.0.1, ::1), an OTS server certificate
    /// (CN opentakserver) and client certificates.
    Certs(CertsArgs),
}

/// Parses `10s`, `500ms`, `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// Bounds, output and pacing shared by every load subcommand.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Length of the measurement phase (after connection setup).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Per connect, handshake and request; and the longest wait for an echo.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// What goes to stdout: a human table or the JSON report.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Also write the JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// No progress lines on stderr.
    #[arg(long, short)]
    pub quiet: bool,
    /// Busy-wait the last millisecond before each intended send, so sends leave on time to the
    /// microsecond (tokio's timer alone may be up to 1 ms late). Costs a busy core.
    #[arg(long)]
    pub spin: bool,
}

/// Client-side TLS.
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// CA certificate(s) the server's certificate must chain to (PEM).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Client certificate chain (PEM), for mutual TLS.
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Use the PKI in DIR (see `loadtest certs`), generating it first if DIR has none; clients
    /// take its client certificates in turn.
    #[arg(long, value_name = "DIR")]
    pub gen_certs: Option<PathBuf>,
    /// How many client certificates --gen-certs creates when it generates.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub client_certs: usize,
    /// The name the server's certificate is checked against.
    #[arg(long, default_value = "localhost")]
    pub server_name: String,
    /// Allow TLS session resumption (default: every handshake is a full one).
    #[arg(long)]
    pub resume: bool,
}

#[derive(Debug, Clone, Args)]
pub struct CotArgs {
    /// host:port of the CoT listener (takgate's [[stream]], nginx's stream, or a sink).
    #[arg(long)]
    pub target: String,
    /// Number of clients (connections).
    #[arg(long, short = 'n', default_value_t = 10)]
    pub clients: usize,
    /// Messages per second per client, or `max` (each client keeps --window messages
    /// awaiting their echo; needs an echoing target).
    #[arg(long, default_value = "1")]
    pub rate_per_client: Rate,
    /// Plain TCP instead of mutual TLS (the baseline: straight to a TCP sink).
    #[arg(long)]
    pub plain: bool,
    /// Open the connections and hold them for --duration without sending.
    #[arg(long)]
    pub idle: bool,
    /// Which events to send.
    #[arg(long, value_enum, default_value_t = Payload::Mixed)]
    pub payload: Payload,
    /// Pad every event to exactly this many bytes (position reports only).
    #[arg(long, value_name = "BYTES")]
    pub size: Option<usize>,
    #[command(flatten)]
    pub stream: StreamArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

/// What `cot` and `ws` clients share: long-lived connections sending stamped messages that
/// come back.
#[derive(Debug, Clone, Args)]
pub struct StreamArgs {
    /// Messages awaiting their echo per client at `--rate-per-client max`.
    #[arg(long, default_value_t = 8)]
    pub window: usize,
    /// Stop after this many messages in all (default: only --duration bounds the run).
    #[arg(long)]
    pub max_messages: Option<u64>,
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// After sending stops, how long to wait for outstanding echoes.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub drain: Duration,
    /// Once every connection is set up, hold them idle this long before the send phase (not
    /// measured): lets a proxy finish what it does after the client's handshake (takgate's
    /// reoriginate mode connects to its upstream then) before latency counts.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub settle: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Method {
    Get,
    Post,
}

#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// URL(s) to request, http:// or https://, on loopback; several are taken in turn.
    #[arg(long = "url", required = true)]
    pub urls: Vec<String>,
    /// Requests per second in all (open model: latency counts from each request's intended
    /// start), or `max`.
    #[arg(long, default_value = "max")]
    pub rate: Rate,
    /// Keep-alive connections.
    #[arg(long, short = 'c', default_value_t = 10)]
    pub connections: usize,
    /// Stop after this many requests in all.
    #[arg(long)]
    pub max_requests: Option<u64>,
    #[arg(long, value_enum, default_value_t = Method::Get)]
    pub method: Method,
    /// Request body size in bytes (POST).
    #[arg(long, default_value_t = 0)]
    pub body_size: usize,
    /// Extra request header, `Name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    /// HTTP/2 (ALPN `h2`) on https:// URLs: one stream at a time per connection, so that
    /// `-c` compares with HTTP/1.1's connections one for one.
    #[arg(long)]
    pub http2: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Clone, Args)]
pub struct StaticArgs {
    /// File URLs to GET in turn, e.g. a small file and a large asset.
    #[arg(long = "url", required = true)]
    pub urls: Vec<String>,
    /// Requests per second in all, or `max`.
    #[arg(long, default_value = "max")]
    pub rate: Rate,
    /// Keep-alive connections.
    #[arg(long, short = 'c', default_value_t = 10)]
    pub connections: usize,
    /// Stop after this many requests in all.
    #[arg(long)]
    pub max_requests: Option<u64>,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

impl StaticArgs {
    pub fn into_http(self) -> HttpArgs {
        HttpArgs {
            urls: self.urls,
            rate: self.rate,
            connections: self.connections,
            max_requests: self.max_requests,
            method: Method::Get,
            body_size: 0,
            headers: Vec::new(),
            http2: false,
            tls: self.tls,
            run: self.run,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct WsArgs {
    /// ws:// or wss:// URL on loopback (through takgate: its /socket.io route).
    #[arg(long)]
    pub url: String,
    /// Number of WebSocket clients.
    #[arg(long, short = 'c', default_value_t = 10)]
    pub clients: usize,
    /// Messages per second per client, or `max` (--window messages awaiting echo each).
    #[arg(long, default_value = "10")]
    pub rate_per_client: Rate,
    /// Message size in bytes (at least 48: the stamp).
    #[arg(long, default_value_t = 128)]
    pub size: usize,
    /// Send binary messages instead of text.
    #[arg(long)]
    pub binary: bool,
    #[command(flatten)]
    pub stream: StreamArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Clone, Args)]
pub struct SinkArgs {
    /// Loopback address to listen on; port 0 picks one. The bound address is printed as one
    /// JSON line on stdout.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
    /// CoT: write every received frame back to its sender.
    #[arg(long)]
    pub echo: bool,
    /// HTTP instead of CoT: small JSON answers, `/bytes/N` bodies, and a WebSocket echo on any
    /// path that asks to upgrade (`--ws` is the same).
    #[arg(long, alias = "ws")]
    pub http: bool,
    /// TLS with --cert/--key (and client certificates required if --ca is given), or with the
    /// PKI of --gen-certs.
    #[arg(long)]
    pub tls: bool,
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Require client certificates from this CA.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Use (or create) the PKI in DIR: its server certificate, and its CA for client
    /// certificates.
    #[arg(long, value_name = "DIR")]
    pub gen_certs: Option<PathBuf>,
    /// Stand in for OTS's TLS CoT port (`eud_handler --ssl`): with --gen-certs, present the
    /// PKI's OTS server certificate (subject CN opentakserver) instead of the localhost one,
    /// require client certificates from its CA, and record the clients' CNs.
    #[arg(long, requires = "gen_certs")]
    pub ots: bool,
    /// Exit after this long (default: on SIGINT/SIGTERM).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Largest CoT frame accepted.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_frame: usize,
}

#[derive(Debug, Clone, Args)]
pub struct LinkArgs {
    /// Loopback address to listen on; port 0 picks one. The bound address is printed as one
    /// JSON line on stdout.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
    /// host:port to relay every accepted connection to (loopback).
    #[arg(long)]
    pub target: String,
    /// Round-trip time the link adds (half of it each way).
    #[arg(long, default_value = "600ms", value_parser = parse_duration)]
    pub rtt: Duration,
    /// Bandwidth of each direction, shared by all connections: `1mbit`, `256kbit`, bits/s.
    #[arg(long, default_value = "1mbit")]
    pub rate: crate::link::Bandwidth,
    /// Bytes a direction holds waiting to leave before it stops reading (the link's buffer).
    #[arg(long, default_value_t = 64 * 1024, value_name = "BYTES")]
    pub queue: usize,
    /// Largest segment put on the link at once.
    #[arg(long, default_value_t = 1500, value_name = "BYTES")]
    pub mtu: usize,
    /// Connecting to the target.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Exit after this long (default: on SIGINT/SIGTERM).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
}

#[derive(Debug, Clone, Args)]
pub struct CertsArgs {
    /// Folder for ca.pem, ca.key, server.pem, server.key, ots-server.pem, ots-server.key,
    /// client-N.pem, client-N.key.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// How many client certificates (CN loadtest-1 …).
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
}
