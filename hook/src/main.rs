use std::ffi::OsString;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use mount_hints::RunscRelease;
use mount_hints_hook::bundle::{read_config, write_config};
use mount_hints_hook::runtime::{exec_runtime, parse_runtime_args};
use mount_hints_hook::{check, complete, Completion, Error, HostNode, RuntimeRelease};
use serde::Deserialize;

/// Completes gVisor mount hints in OCI bundles before runsc reads them.
#[derive(Parser)]
#[command(name = "mount-hints-hook", version)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Stand in front of runsc: complete config.json on `create`/`run`, then exec the runtime unchanged.
    Wrap {
        /// The real runtime.
        #[arg(long, value_name = "PATH")]
        runtime: Option<PathBuf>,
        #[command(flatten)]
        node: NodeArgs,
        /// The runtime's arguments.
        #[arg(last = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Podman hooks.d `precreate` stage: the config on stdin, the completed config on stdout.
    Precreate {
        #[command(flatten)]
        node: NodeArgs,
    },
    /// OCI `prestart`/`createRuntime` hook (state on stdin): report hints runsc loaded incomplete.
    OciHook {
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Check a node's containerd / CRI-O configuration for what mount hints need; exit 1 when something is missing.
    Doctor {
        #[arg(long, value_name = "FILE", default_value = "/etc/containerd/config.toml")]
        containerd_config: PathBuf,
        #[arg(long, value_name = "FILE", default_value = "/etc/crio/crio.conf")]
        crio_config: PathBuf,
        #[arg(long, value_name = "DIR", default_value = "/etc/crio/crio.conf.d")]
        crio_config_dir: PathBuf,
        /// Where the hook is installed on the node.
        #[arg(long, value_name = "PATH", default_value = "/usr/local/bin/mount-hints-hook")]
        hook_path: PathBuf,
    },
    /// Print what the completion would change in a bundle, without writing.
    Inspect {
        #[arg(long, value_name = "DIR")]
        bundle: PathBuf,
        #[command(flatten)]
        node: NodeArgs,
    },
}

#[derive(Args, Clone)]
struct NodeArgs {
    /// The kubelet's root directory (symlinks are resolved).
    #[arg(long, value_name = "DIR")]
    kubelet_root: Option<PathBuf>,
    /// The runsc release in use (YYYYMMDD, release-YYYYMMDD.N or 0.0~YYYYMMDD.N); detected from the runtime
    /// in wrap mode when not given, the strictest rules otherwise.
    #[arg(long, value_name = "RELEASE")]
    runsc_release: Option<RunscRelease>,
    /// Fail instead of dropping a hint that cannot be completed.
    #[arg(long)]
    strict: bool,
}

/// `/etc/mount-hints/hook.json` (or `$MOUNT_HINTS_HOOK_CONFIG`): lets the hook stand in for runsc with no
/// arguments of its own (containerd's gVisor shim `binary_name`, CRI-O `runtime_path`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HookConfig {
    runtime: Option<PathBuf>,
    kubelet_root: Option<PathBuf>,
    runsc_release: Option<String>,
    #[serde(default)]
    strict: bool,
}

const DEFAULT_CONFIG: &str = "/etc/mount-hints/hook.json";
const DEFAULT_RUNTIME: &str = "/usr/bin/runsc";
const DEFAULT_KUBELET_ROOT: &str = "/var/lib/kubelet";
const MODES: &[&str] =
    &["wrap", "precreate", "oci-hook", "inspect", "doctor", "help", "--help", "-h", "--version", "-V"];

fn load_config() -> Result<HookConfig, Error> {
    let path = std::env::var_os("MOUNT_HINTS_HOOK_CONFIG").map(PathBuf::from);
    let explicit = path.is_some();
    let path = path.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| Error::Json { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(HookConfig::default()),
        Err(source) => Err(Error::Read { path, source }),
    }
}

/// Flags win over the config file, the config file over defaults.
struct Resolved {
    runtime: PathBuf,
    kubelet_root: PathBuf,
    release: Option<RunscRelease>,
    strict: bool,
}

fn resolve(node: &NodeArgs, runtime: Option<PathBuf>) -> Result<Resolved, Error> {
    let config = load_config()?;
    let release = match (&node.runsc_release, &config.runsc_release) {
        (Some(r), _) => Some(*r),
        (None, Some(text)) => Some(text.parse().map_err(|e: mount_hints::ReleaseError| Error::Usage(e.to_string()))?),
        (None, None) => None,
    };
    Ok(Resolved {
        runtime: runtime.or(config.runtime).unwrap_or_else(|| PathBuf::from(DEFAULT_RUNTIME)),
        kubelet_root: node.kubelet_root.clone().or(config.kubelet_root).unwrap_or_else(|| DEFAULT_KUBELET_ROOT.into()),
        release,
        strict: node.strict || config.strict,
    })
}

fn main() -> ExitCode {
    init_logging();
    let args: Vec<OsString> = std::env::args_os().collect();
    // Invoked as runsc itself (binary_name / runtime_path): every argument is the runtime's.
    let first = args.get(1).and_then(|a| a.to_str());
    if !first.is_some_and(|a| MODES.contains(&a)) {
        let node = NodeArgs { kubelet_root: None, runsc_release: None, strict: false };
        return report(wrap(&node, None, &args[1..]));
    }
    let cli = Cli::parse();
    report(match cli.mode {
        Mode::Wrap { runtime, node, args } => wrap(&node, runtime, &args),
        Mode::Precreate { node } => precreate(&node),
        Mode::OciHook { node } => oci_hook(&node),
        Mode::Inspect { bundle, node } => inspect(&node, &bundle),
        Mode::Doctor { containerd_config, crio_config, crio_config_dir, hook_path } => {
            return doctor(&containerd_config, &crio_config, &crio_config_dir, &hook_path);
        }
    })
}

/// A plain level from `MOUNT_HINTS_LOG` (error, warn, info, debug): the hook runs once per container create,
/// and compiling an EnvFilter's directives would cost more than the completion itself.
fn init_logging() {
    let level = std::env::var("MOUNT_HINTS_LOG").ok().and_then(|l| l.parse().ok());
    let level = level.unwrap_or(tracing_subscriber::filter::LevelFilter::INFO);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

fn report(result: Result<(), Error>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn host_node(resolved: &Resolved, detect: bool) -> HostNode {
    let release = match (resolved.release, detect) {
        (Some(r), _) => RuntimeRelease::Known(Some(r)),
        (None, true) => RuntimeRelease::Detect { runtime: resolved.runtime.clone(), cached: Default::default() },
        (None, false) => RuntimeRelease::Known(None),
    };
    HostNode::new(&resolved.kubelet_root, release)
}

/// One line per completed spec at info (a node creates many containers), each change at debug.
fn log_completion(completion: &Completion, what: &str) {
    if !completion.changes.is_empty() {
        tracing::info!("{what}: {:?} container, {} change(s)", completion.kind, completion.changes.len());
    }
    for change in &completion.changes {
        tracing::debug!("{what}: {change}");
    }
    for warning in &completion.warnings {
        tracing::warn!("{what}: {warning}");
    }
}

/// Completes the bundle of a `create`/`run`, then becomes the runtime. A node-side failure leaves the
/// spec as it was (the runtime then reports its own error) unless `--strict`.
fn wrap(node: &NodeArgs, runtime: Option<PathBuf>, args: &[OsString]) -> Result<(), Error> {
    let resolved = resolve(node, runtime)?;
    // A runtime path that leads back here (hook.json naming the hook, or a runsc symlink to it) would exec
    // forever; refuse it with the fix.
    let same = |a: &Path, b: &Path| a.canonicalize().ok().is_some_and(|a| b.canonicalize().ok() == Some(a));
    if std::env::current_exe().is_ok_and(|me| same(&me, &resolved.runtime)) {
        return Err(Error::Usage(format!(
            "the runtime {} is this hook itself: set \"runtime\" in hook.json (or --runtime) to the real runsc",
            resolved.runtime.display()
        )));
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    if let Some(bundle) = parse_runtime_args(args, &cwd).bundle {
        match complete_bundle(&resolved, &bundle) {
            Ok(()) => {}
            Err(e) if resolved.strict => return Err(e),
            Err(e) => tracing::error!(bundle = %bundle.display(), "left unchanged: {e}"),
        }
    }
    Err(exec_runtime(&resolved.runtime, args))
}

fn complete_bundle(resolved: &Resolved, bundle: &Path) -> Result<(), Error> {
    let spec = read_config(bundle)?;
    let completion = complete(&spec, &host_node(resolved, true), resolved.strict)?;
    log_completion(&completion, &bundle.display().to_string());
    if !completion.changes.is_empty() {
        write_config(bundle, &completion.spec)?;
    }
    Ok(())
}

fn read_stdin() -> Result<Vec<u8>, Error> {
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input).map_err(|source| Error::Read { path: "<stdin>".into(), source })?;
    Ok(input)
}

fn precreate(node: &NodeArgs) -> Result<(), Error> {
    let resolved = resolve(node, None)?;
    let input = read_stdin()?;
    let spec = serde_json::from_slice(&input).map_err(|source| Error::Json { path: "<stdin>".into(), source })?;
    let completion = complete(&spec, &host_node(&resolved, false), resolved.strict)?;
    log_completion(&completion, "precreate");
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, &completion.spec)
        .map_err(|e| Error::Write { path: "<stdout>".into(), source: e.into() })?;
    stdout.flush().map_err(|source| Error::Write { path: "<stdout>".into(), source })
}

fn oci_hook(node: &NodeArgs) -> Result<(), Error> {
    let resolved = resolve(node, None)?;
    let input = read_stdin()?;
    let state: oci_spec::runtime::State =
        serde_json::from_slice(&input).map_err(|source| Error::Json { path: "<stdin>".into(), source })?;
    let spec = read_config(state.bundle())?;
    let problems = check::hint_problems(&spec);
    for problem in &problems {
        tracing::warn!(container = state.id(), "{problem}");
    }
    if resolved.strict && !problems.is_empty() {
        return Err(Error::Strict(format!("{} incomplete mount hint(s) in {}", problems.len(), state.id())));
    }
    Ok(())
}

fn inspect(node: &NodeArgs, bundle: &Path) -> Result<(), Error> {
    let resolved = resolve(node, None)?;
    let spec = read_config(bundle)?;
    let completion = complete(&spec, &host_node(&resolved, false), resolved.strict)?;
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

fn read_toml(path: &Path) -> Option<Result<toml::Table, String>> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(text.parse::<toml::Table>().map_err(|e| format!("{}: {e}", path.display())))
}

fn doctor(containerd: &Path, crio: &Path, crio_dir: &Path, hook: &Path) -> ExitCode {
    use mount_hints_hook::doctor::{check_containerd, check_crio, Finding};
    let mut findings: Vec<Finding> = Vec::new();
    let mut seen_runtime = false;
    let bad = |message: String| Finding { ok: false, message };
    match read_toml(containerd) {
        Some(Ok(config)) => {
            seen_runtime = true;
            let runsc_toml = |p: &str| read_toml(Path::new(p)).and_then(Result::ok);
            findings.extend(check_containerd(&config, &runsc_toml, hook));
        }
        Some(Err(e)) => findings.push(bad(e)),
        None => {}
    }
    let mut crio_files: Vec<PathBuf> = vec![crio.to_owned()];
    let mut dropins: Vec<PathBuf> = std::fs::read_dir(crio_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    dropins.sort();
    crio_files.extend(dropins);
    let mut crio_tables = Vec::new();
    for file in &crio_files {
        match read_toml(file) {
            Some(Ok(t)) => crio_tables.push(t),
            Some(Err(e)) => findings.push(bad(e)),
            None => {}
        }
    }
    if !crio_tables.is_empty() {
        seen_runtime = true;
        findings.extend(check_crio(&crio_tables, hook));
    }
    if !seen_runtime {
        findings.push(bad(format!(
            "no containerd ({}) or CRI-O ({}) configuration found",
            containerd.display(),
            crio.display()
        )));
    }
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(hook) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => {
            findings.push(Finding { ok: true, message: format!("hook installed at {}", hook.display()) })
        }
        _ => findings.push(bad(format!("hook not installed at {} (or not executable)", hook.display()))),
    }
    let mut out = std::io::stdout().lock();
    for f in &findings {
        let _ = writeln!(out, "{} {}", if f.ok { "ok:     " } else { "missing:" }, f.message);
    }
    if findings.iter().all(|f| f.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
