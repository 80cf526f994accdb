//! How `serve` logs: one JSON object per line on stderr (or tracing's text format).
//!
//! The JSON lines have the shape tracing-subscriber's `json().flatten_event(true)` writes (`timestamp`,
//! `level`, the event's fields, `target`, then `span`/`spans` inside a span), but are written straight into the
//! line buffer: the generic formatter serializes token by token through an `io::Write` adapter that re-checks
//! UTF-8 on every token and allocates a fresh timestamp string, which made the per-review line cost about as much
//! as the mutation of a small pod. Strings are still escaped by serde_json; only the already-escaped pieces are
//! joined here. Lines reach stderr in batches (see [`batch`]).

mod batch;

pub use batch::LogFlush;

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormattedFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use batch::{Batched, FLUSH_INTERVAL};

/// The shape of the log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// Installs the process's subscriber: `RUST_LOG` filters (default `info`), lines go to stderr in batches. Hold
/// the returned guard until the process is done: dropping it writes what is still pending.
pub fn init(format: LogFormat) -> LogFlush {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let batched = Batched::new(std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(batched.clone());
    match format {
        LogFormat::Json => builder.fmt_fields(JsonFields::new()).event_format(JsonLine).init(),
        LogFormat::Text => builder.init(),
    }
    batched.flush_before_panic_messages();
    // Without the timer thread every line would still go out, only later (at a warning, a full batch or
    // exit); say so once rather than fail to serve.
    if let Err(e) = batched.flush_every(FLUSH_INTERVAL) {
        tracing::warn!(error = %e, "no log flush thread; info lines reach stderr only with the next warning");
    }
    LogFlush::new(batched)
}

/// Formats an event as one JSON object (see the module documentation for the shape).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        // Events forwarded from the `log` crate carry their real level and target in fields.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        writer.write_str("{\"timestamp\":\"")?;
        write_timestamp(&mut writer, SystemTime::now())?;
        writer.write_str("\",\"level\":\"")?;
        writer.write_str(meta.level().as_str())?;
        writer.write_char('"')?;
        let mut fields = JsonFieldsVisitor { out: &mut writer, result: Ok(()) };
        event.record(&mut fields);
        fields.result?;
        writer.write_str(",\"target\":")?;
        write_json_string(&mut writer, meta.target())?;
        let current = event.parent().and_then(|id| ctx.span(id)).or_else(|| ctx.lookup_current());
        if let Some(current) = current {
            writer.write_str(",\"span\":")?;
            write_span::<S, N>(&mut writer, &current)?;
            writer.write_str(",\"spans\":[")?;
            for (i, span) in current.scope().from_root().enumerate() {
                writer.write_str(if i == 0 { "" } else { "," })?;
                write_span::<S, N>(&mut writer, &span)?;
            }
            writer.write_char(']')?;
        }
        writer.write_str("}\n")
    }
}

/// `{"name": ..., <the span's fields>}`; the fields were formatted as a JSON object by [`JsonFields`].
fn write_span<S, N>(out: &mut Writer<'_>, span: &tracing_subscriber::registry::SpanRef<'_, S>) -> fmt::Result
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    out.write_str("{\"name\":")?;
    write_json_string(out, span.name())?;
    let extensions = span.extensions();
    let fields = extensions.get::<FormattedFields<N>>().map(|f| f.fields.trim()).unwrap_or_default();
    let inner = fields.strip_prefix('{').and_then(|f| f.strip_suffix('}')).unwrap_or_default().trim();
    if !inner.is_empty() {
        out.write_char(',')?;
        out.write_str(inner)?;
    }
    out.write_char('}')
}

/// Writes each field as `,"name":value`; `log.*` fields of forwarded `log` records are the metadata already used.
struct JsonFieldsVisitor<'a, 'w> {
    out: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl JsonFieldsVisitor<'_, '_> {
    fn field(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        self.result = (|| {
            self.out.write_char(',')?;
            write_json_string(self.out, field.name())?;
            self.out.write_char(':')?;
            value(self.out)
        })();
    }
}

impl Visit for JsonFieldsVisitor<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, |out| write_json_string(out, value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |out| out.write_str(if value { "true" } else { "false" }));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |out| write!(out, "{value}"));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |out| write!(out, "{value}"));
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        self.field(field, |out| write!(out, "{value}"));
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        self.field(field, |out| write!(out, "{value}"));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        // As serde_json writes it (`1.0`, and `null` for what JSON cannot hold); rare enough to allocate.
        self.field(field, |out| out.write_str(&serde_json::to_string(&value).map_err(|_| fmt::Error)?));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.field(field, |out| write_json_display(out, value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, |out| write_json_display(out, &format_args!("{value:?}")));
    }
}

/// `value`'s text as a JSON string, escaped piece by piece as it is formatted (no intermediate `String`).
fn write_json_display(out: &mut Writer<'_>, value: &dyn fmt::Display) -> fmt::Result {
    struct Escaping<'a, 'w>(&'a mut Writer<'w>);
    impl fmt::Write for Escaping<'_, '_> {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            write_json_string_contents(self.0, s)
        }
    }
    out.write_char('"')?;
    write!(Escaping(out), "{value}")?;
    out.write_char('"')
}

fn write_json_string(out: &mut Writer<'_>, s: &str) -> fmt::Result {
    out.write_char('"')?;
    write_json_string_contents(out, s)?;
    out.write_char('"')
}

/// `s` as the inside of a JSON string. Text that needs no escape (nearly all of it) is copied as it is; the rest
/// goes through serde_json's escaping.
fn write_json_string_contents(out: &mut Writer<'_>, s: &str) -> fmt::Result {
    if !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        return out.write_str(s);
    }
    let quoted = serde_json::to_string(s).map_err(|_| fmt::Error)?;
    out.write_str(&quoted[1..quoted.len() - 1])
}

/// RFC 3339 in UTC with microseconds, as tracing-subscriber writes it (`2026-12-03T09:49:12.371680Z`). The date
/// and time of day change once a second; they are formatted once per second per thread.
fn write_timestamp(out: &mut impl fmt::Write, now: SystemTime) -> fmt::Result {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != secs {
            text.clear();
            let at = i64::try_from(secs)
                .ok()
                .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            write!(
                text,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                at.year(),
                u8::from(at.month()),
                at.day(),
                at.hour(),
                at.minute(),
                at.second()
            )?;
            *cached = secs;
        }
        write!(out, "{text}.{:06}Z", since_epoch.subsec_micros())
    })
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use serde_json::{json, Value};
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;
        fn make_writer(&'a self) -> Lines {
            self.clone()
        }
    }

    /// Each line written while `f` runs, parsed; ours and tracing-subscriber's own JSON formatter side by side.
    fn lines_of(f: impl Fn()) -> (Vec<Value>, Vec<Value>) {
        let parse = |lines: &Lines| -> Vec<Value> {
            let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
            assert!(text.ends_with('\n'), "{text}");
            text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
        };
        let (ours, theirs) = (Lines::default(), Lines::default());
        let subscriber = tracing_subscriber::fmt()
            .with_writer(ours.clone())
            .fmt_fields(JsonFields::new())
            .event_format(JsonLine)
            .finish();
        tracing::subscriber::with_default(subscriber, &f);
        let subscriber = tracing_subscriber::fmt().with_writer(theirs.clone()).json().flatten_event(true).finish();
        tracing::subscriber::with_default(subscriber, &f);
        (parse(&ours), parse(&theirs))
    }

    fn without_timestamp(mut line: Value) -> Value {
        let stamp = line.as_object_mut().unwrap().remove("timestamp").unwrap();
        let stamp = stamp.as_str().unwrap();
        assert!(time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339).is_ok(), "{stamp}");
        line
    }

    #[test]
    fn lines_say_what_tracing_subscribers_json_says() {
        #[derive(Debug)]
        #[allow(dead_code)]
        enum Outcome {
            Patched,
        }
        let error = io::Error::other("disk \"full\"\n");
        let (ours, theirs) = lines_of(|| {
            tracing::info!(uid = %"7f0b-\u{1}\"quoted\"", outcome = ?Outcome::Patched, hints = 3u64, micros = 12u64,
                signed = -4i64, ok = true, ratio = 0.5f64, whole = 1.0f64, "review");
            tracing::warn!(error = %error, "certificate files unreadable; keeping the current certificate");
            tracing::error!(error = &error as &(dyn std::error::Error + 'static), "as an error value");
            let span = tracing::info_span!("watch", kind = "RuntimeClass", attempt = 2u64);
            let _entered = span.enter();
            let inner = tracing::info_span!("list");
            let _inner = inner.enter();
            tracing::info!(names = ?["gvisor", "runsc"], "gVisor runtime classes changed");
        });
        assert_eq!(ours.len(), 4);
        assert_eq!(ours.len(), theirs.len());
        for (ours, theirs) in ours.into_iter().zip(theirs) {
            assert_eq!(without_timestamp(ours), without_timestamp(theirs));
        }
    }

    #[test]
    fn the_review_line_has_its_fields_in_order() {
        let (ours, _) = lines_of(|| tracing::info!(uid = %"u-1", outcome = ?"patched", hints = 2u64, "review"));
        let line = serde_json::to_string(&ours[0]).unwrap();
        let keys: Vec<&str> = ours[0].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["timestamp", "level", "message", "uid", "outcome", "hints", "target"], "{line}");
        assert_eq!(ours[0]["message"], json!("review"));
        assert_eq!(ours[0]["level"], json!("INFO"));
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        let mut text = String::new();
        let at = UNIX_EPOCH + Duration::new(1_796_291_352, 371_680_999);
        write_timestamp(&mut text, at).unwrap();
        assert_eq!(text, "2026-12-03T09:49:12.371680Z");
        // The cached date and time of day follow the second.
        text.clear();
        write_timestamp(&mut text, at + Duration::from_secs(86_400)).unwrap();
        assert_eq!(text, "2026-12-04T09:49:12.371680Z");
        text.clear();
        write_timestamp(&mut text, UNIX_EPOCH + Duration::from_micros(5)).unwrap();
        assert_eq!(text, "1970-01-01T00:00:00.000005Z");
    }
}
