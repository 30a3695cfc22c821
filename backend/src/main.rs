//! The relay binary: read settings, start logging, serve until SIGINT or SIGTERM.

use anyhow::Context;
use backend::{
    config::{Cli, Config},
    shutdown, startup, telemetry,
};
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from(Cli::parse());
    telemetry::init(std::io::stdout);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    startup::run(listener, config, shutdown::signal()).await
}
