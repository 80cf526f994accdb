//! Podman's hooks.d `precreate` stage: the config on stdin, the completed config on stdout.

use std::io::Write;
use std::process::ExitCode;

use mount_hints_hook::config::Settings;
use mount_hints_hook::{complete, Error};

use super::{host_node, log_completion, read_stdin, report};
use crate::cli::NodeArgs;

pub fn run(args: NodeArgs) -> ExitCode {
    report(precreate(&args))
}

fn precreate(args: &NodeArgs) -> Result<(), Error> {
    let settings = Settings::load(&args.flags(None))?;
    let input = read_stdin()?;
    let spec = serde_json::from_slice(&input).map_err(|source| Error::Json { path: "<stdin>".into(), source })?;
    let completion = complete(&spec, &host_node(&settings, false), settings.strict)?;
    log_completion(&completion, "precreate");
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, &completion.spec)
        .map_err(|e| Error::Write { path: "<stdout>".into(), source: e.into() })?;
    stdout.flush().map_err(|source| Error::Write { path: "<stdout>".into(), source })
}
