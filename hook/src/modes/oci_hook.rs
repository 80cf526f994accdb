//! The OCI `prestart`/`createRuntime` hook: runsc has loaded the spec; say which hints it loaded incomplete.
//! A hook that exits non-zero aborts the container, so without `--strict` nothing here fails: a state or a
//! config.json that cannot be read is a warning.

use std::process::ExitCode;

use mount_hints_hook::bundle::read_config;
use mount_hints_hook::config::Settings;
use mount_hints_hook::{check, Error};

use super::{read_stdin, report};
use crate::cli::NodeArgs;

pub fn run(args: NodeArgs) -> ExitCode {
    report(oci_hook(&args))
}

fn oci_hook(args: &NodeArgs) -> Result<(), Error> {
    let strict = match Settings::load(&args.flags(None)) {
        Ok(settings) => settings.strict,
        Err(e) if args.strict => return Err(e.into()),
        Err(e) => {
            tracing::warn!("{e}");
            false
        }
    };
    let soft = |e: Error| {
        if strict {
            return Err(e);
        }
        tracing::warn!("{e}");
        Ok(())
    };
    let input = match read_stdin() {
        Ok(input) => input,
        Err(e) => return soft(e),
    };
    let state: oci_spec::runtime::State = match serde_json::from_slice(&input) {
        Ok(state) => state,
        Err(source) => return soft(Error::Json { path: "<stdin: OCI state>".into(), source }),
    };
    let spec = match read_config(state.bundle()) {
        Ok(spec) => spec,
        Err(e) => return soft(e),
    };
    let problems = check::hint_problems(&spec);
    for problem in &problems {
        tracing::warn!(container = state.id(), "{problem}");
    }
    if strict && !problems.is_empty() {
        return Err(Error::Strict(format!("{} incomplete mount hint(s) in {}", problems.len(), state.id())));
    }
    Ok(())
}
