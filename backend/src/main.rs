//! The relay binary: read settings, start logging, serve until SIGINT or SIGTERM.

use std::process::ExitCode;

use anyhow::Context;
use backend::{
    config::{Cli, Config},
    shutdown, startup, telemetry,
};
use clap::Parser;

fn main() -> ExitCode {
    match serve() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line a person can act on, with every cause.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn serve() -> anyhow::Result<()> {
    let config = Config::from(Cli::parse());
    telemetry::init(std::io::stdout);
    let listener = startup::bind(config.listen, config.listen_backlog)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    startup::run(listener, config, shutdown::signal()).await
}
