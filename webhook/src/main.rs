use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use mount_hints_webhook::preview::{parse_documents, preview_documents, PreviewedDocument};
use mount_hints_webhook::{Error, GvisorScope, MutationSettings, SharePolicy};

/// Mutating admission webhook that adds gVisor mount hints to Pods that run under gVisor.
#[derive(Parser)]
#[command(name = "mount-hints-webhook", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print what the webhook would do to Pods or workload manifests (YAML or JSON; `-` for stdin).
    Preview(PreviewArgs),
}

/// Mutation settings shared by every command; flags override the file.
#[derive(Args)]
struct SettingsArgs {
    /// Settings file (YAML or JSON): runtimeClassNames, runtimeHandlers, sharePolicy, memorySizeOption,
    /// denyAnnotations.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A runtime class name that means gVisor (repeatable; replaces the configured list).
    #[arg(long = "runtime-class", value_name = "NAME")]
    runtime_classes: Vec<String>,
    #[arg(long, value_enum)]
    share_policy: Option<SharePolicy>,
    /// Emit size=<bytes> from a Memory emptyDir's sizeLimit (every node must run runsc >= release-20240501).
    #[arg(long)]
    memory_size_option: bool,
}

impl SettingsArgs {
    fn load(&self) -> Result<MutationSettings, Error> {
        let mut settings = match &self.config {
            Some(path) => MutationSettings::from_file(path)?,
            None => MutationSettings::default(),
        };
        if !self.runtime_classes.is_empty() {
            settings.runtime_class_names = self.runtime_classes.iter().cloned().collect();
        }
        if let Some(policy) = self.share_policy {
            settings.share_policy = policy;
        }
        settings.memory_size_option |= self.memory_size_option;
        Ok(settings)
    }
}

#[derive(Args)]
struct PreviewArgs {
    /// Input file, or `-` for standard input.
    #[arg(default_value = "-")]
    input: String,
    #[arg(long, short, value_enum, default_value_t = Output::Yaml)]
    output: Output,
    /// Treat every pod as a gVisor pod, whatever its runtimeClassName.
    #[arg(long)]
    assume_gvisor: bool,
    #[command(flatten)]
    settings: SettingsArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    /// The mutated objects, as a YAML stream.
    Yaml,
    /// The mutated objects, as JSON (one value per document).
    Json,
    /// The RFC 6902 JSON Patch for each document.
    Patch,
    /// Only the warnings, on standard output.
    Warnings,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Preview(args) => preview(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mount-hints-webhook: {e}");
            ExitCode::from(if e.is_bad_input() { 2 } else { 1 })
        }
    }
}

fn preview(args: &PreviewArgs) -> Result<(), Error> {
    let settings = args.settings.load()?;
    let scope = if args.assume_gvisor { GvisorScope::every_pod() } else { GvisorScope::from_settings(&settings) };
    let (origin, text) = if args.input == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|source| Error::Read { path: "<stdin>".into(), source })?;
        ("<stdin>".to_owned(), text)
    } else {
        let path = PathBuf::from(&args.input);
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Read { path: path.clone(), source })?;
        (args.input.clone(), text)
    };
    let documents = parse_documents(&text, &origin)?;
    let previewed = preview_documents(documents, &origin, &settings, &scope)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for document in &previewed {
        for note in &document.notes {
            eprintln!("note: {note}");
        }
        for audit in &document.audit {
            eprintln!("audit: {audit}");
        }
        if !matches!(args.output, Output::Warnings) {
            for warning in &document.warnings {
                eprintln!("warning: {warning}");
            }
        }
    }
    write_output(&mut out, args.output, &previewed)?;
    out.flush()?;
    Ok(())
}

fn write_output(out: &mut impl Write, output: Output, previewed: &[PreviewedDocument]) -> Result<(), Error> {
    for (i, document) in previewed.iter().enumerate() {
        match output {
            Output::Yaml => {
                if i > 0 {
                    writeln!(out, "---")?;
                }
                let yaml = serde_yaml_ng::to_string(&document.object).map_err(std::io::Error::other)?;
                out.write_all(yaml.as_bytes())?;
            }
            Output::Json => writeln!(out, "{}", pretty(&document.object))?,
            Output::Patch => writeln!(out, "{}", pretty(&document.patch))?,
            Output::Warnings => {
                for warning in &document.warnings {
                    writeln!(out, "{warning}")?;
                }
            }
        }
    }
    Ok(())
}

fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).expect("a JSON value always serializes")
}
