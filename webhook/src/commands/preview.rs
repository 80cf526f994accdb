//! `preview`: what the webhook would do to the Pods and workloads of a manifest, offline.

use std::io::{Read, Write};
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use mount_hints_webhook::preview::{parse_documents, patch_report, preview_documents, yaml_stream, PreviewedDocument};
use mount_hints_webhook::{Error, GvisorScope};

use super::SettingsArgs;

#[derive(Args)]
pub struct PreviewArgs {
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
pub enum Output {
    /// The mutated objects, as a YAML stream.
    Yaml,
    /// The mutated objects, as JSON (one value per document).
    Json,
    /// The RFC 6902 JSON Patch of the document; for several documents, one JSON array of
    /// `{document, kind, name, patch}` entries.
    Patch,
    /// Only the warnings, on standard output.
    Warnings,
}

pub fn run(args: &PreviewArgs) -> Result<(), Error> {
    let settings = args.settings.load()?;
    let scope = if args.assume_gvisor { GvisorScope::every_pod() } else { GvisorScope::from_settings(&settings) };
    let (origin, text) = if args.input == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|source| Error::Read { path: "<stdin>".into(), source })?;
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
    match output {
        Output::Yaml => out.write_all(yaml_stream(previewed)?.as_bytes())?,
        Output::Json => {
            for document in previewed {
                writeln!(out, "{}", pretty(&document.object))?;
            }
        }
        Output::Patch => writeln!(out, "{}", pretty(&patch_report(previewed)))?,
        Output::Warnings => {
            for warning in previewed.iter().flat_map(|d| &d.warnings) {
                writeln!(out, "{warning}")?;
            }
        }
    }
    Ok(())
}

fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).expect("a JSON value always serializes")
}
