//! The relay binary: read settings, start logging, serve until SIGINT or SIGTERM. Or, as
//! `relay token …`, print a signed token for development.

use std::process::ExitCode;

use anyhow::Context;
use backend::{
    auth::cli::TokenArgs,
    config::{Cli, Config},
    shutdown, startup, telemetry,
};
use clap::Parser;

/// jemalloc returns freed memory to the system a few seconds after a burst (rooms opened
/// and closed by the thousand); glibc's malloc kept most of it.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let outcome = if std::env::args().nth(1).as_deref() == Some("token") {
        print_token()
    } else {
        serve()
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line a person can act on, with every cause.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `relay token`: the token goes to standard output, alone, for `$(relay token …)`.
#[allow(clippy::print_stdout)] // Printing it is the whole point.
fn print_token() -> anyhow::Result<()> {
    let args = TokenArgs::parse_from(std::env::args().skip(1));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    println!("{}", args.token(now)?);
    Ok(())
}

#[tokio::main]
async fn serve() -> anyhow::Result<()> {
    let config = Config::from(Cli::parse());
    telemetry::init(std::io::stdout);
    let listener = startup::bind(config.listen, config.listen_backlog)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    startup::run(listener, config, shutdown::signal()).await
}
