//! `inspect --bundle DIR`: what the completion would change, on stdout, without writing.

use std::io::Write;
use std::process::ExitCode;

use mount_hints_hook::bundle::read_config;
use mount_hints_hook::config::Settings;
use mount_hints_hook::{complete, Error};

use super::{host_node, report};
use crate::cli::InspectArgs;

pub fn run(args: InspectArgs) -> ExitCode {
    report(inspect(&args))
}

fn inspect(args: &InspectArgs) -> Result<(), Error> {
    let settings = Settings::load(&args.node.flags(None))?;
    let spec = read_config(&args.bundle)?;
    let completion = complete(&spec, &host_node(&settings, false), settings.strict)?;
    let mut out = std::io::stdout().lock();
    let write_err = |source| Error::Write { path: "<stdout>".into(), source };
    writeln!(out, "{:?} container, {} change(s)", completion.kind, completion.changes.len()).map_err(write_err)?;
    for change in &completion.changes {
        writeln!(out, "  {change}").map_err(write_err)?;
    }
    for warning in &completion.warnings {
        writeln!(out, "  warning: {warning}").map_err(write_err)?;
    }
    Ok(())
}
