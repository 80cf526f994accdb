//! `mount-hints-webhook`: parses the command line and hands it to the subcommand's module.

mod commands;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use commands::{certs, preview, serve};

/// Mutating admission webhook that adds gVisor mount hints to Pods that run under gVisor.
#[derive(Parser)]
#[command(name = "mount-hints-webhook", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the admission webhook (with no certificate flags: a self-signed certificate for localhost).
    Serve(Box<serve::ServeArgs>),
    /// Print what the webhook would do to Pods or workload manifests (YAML or JSON; `-` for stdin).
    Preview(preview::PreviewArgs),
    /// Write a CA, a serving certificate for <service>.<namespace>.svc and the base64 caBundle.
    Certs(certs::CertsArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Preview(args) => preview::run(&args),
        Command::Serve(args) => serve::run(*args),
        Command::Certs(args) => certs::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mount-hints-webhook: {e}");
            ExitCode::from(if e.is_bad_input() { 2 } else { 1 })
        }
    }
}
