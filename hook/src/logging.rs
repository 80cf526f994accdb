//! Where the hook's log lines go, and in which shape.
//!
//! In `wrap` the inherited stdio is the container's (the shim and conmon hand runsc the container's stdio), so
//! nothing may be written there: lines go where the runtime's caller collects runtime errors, the `--log` file
//! (or `--log-fd`) in its `--log-format`, else to the file `hook.json` names. The JSON shapes are runsc's, so
//! a shim that reports a runtime's last error from that file reports the hook's too.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Every line names its writer: the runtime's log file is shared with runsc.
const ORIGIN: &str = "mount-hints-hook";

/// runsc's `--log-format` values.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
    JsonK8s,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown log format `{0}` (expected text, json or json-k8s)")]
pub struct UnknownLogFormat(pub String);

impl FromStr for LogFormat {
    type Err = UnknownLogFormat;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            "json-k8s" => Ok(LogFormat::JsonK8s),
            other => Err(UnknownLogFormat(other.to_owned())),
        }
    }
}

/// Opens a log file for appending (runsc's callers pass one file to many commands and parse it, so it is
/// never truncated).
pub fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).create(true).mode(0o644).open(path)
}

/// A private copy of an inherited descriptor (`--log-fd`), closed on exec so the runtime keeps only its own.
pub fn dup_fd(fd: RawFd) -> io::Result<File> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) only reads `fd`; a new descriptor is returned or -1.
    let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if copy < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `copy` is a fresh descriptor that nothing else owns.
    Ok(unsafe { File::from_raw_fd(copy) })
}

/// A tracing layer that writes each event as one line, in one `write`, to `out`.
pub struct LineLayer {
    out: Mutex<File>,
    format: LogFormat,
}

impl LineLayer {
    pub fn new(out: File, format: LogFormat) -> LineLayer {
        LineLayer { out: Mutex::new(out), format }
    }
}

impl<S: Subscriber> Layer<S> for LineLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut message = Message::default();
        event.record(&mut message);
        let line = format_line(self.format, *event.metadata().level(), SystemTime::now(), &message.0);
        if let Ok(mut out) = self.out.lock() {
            // A log line that cannot be written must not stop the container.
            let _ = out.write_all(line.as_bytes());
        }
    }
}

#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

/// One line, newline included. Text is runsc's glog-like shape (`W1202 14:22:04.123456 pid origin] msg`, in
/// UTC); JSON is `{"msg", "level", "time"}` (`"log"` in place of `"msg"` for json-k8s) with runsc's level
/// names, `error` being what runsc writes for a failed command.
pub fn format_line(format: LogFormat, level: Level, at: SystemTime, message: &str) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let t = utc(since.as_secs() as i64);
    let micros = since.subsec_micros();
    match format {
        LogFormat::Text => {
            let letter = match level {
                Level::ERROR => 'E',
                Level::WARN => 'W',
                Level::INFO => 'I',
                _ => 'D',
            };
            format!(
                "{letter}{:02}{:02} {:02}:{:02}:{:02}.{micros:06} {:>7} {ORIGIN}] {message}\n",
                t.month,
                t.day,
                t.hour,
                t.minute,
                t.second,
                std::process::id()
            )
        }
        LogFormat::Json | LogFormat::JsonK8s => {
            let level = match level {
                Level::ERROR => "error",
                Level::WARN => "warning",
                Level::INFO => "info",
                _ => "debug",
            };
            let time = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
                t.year,
                t.month,
                t.day,
                t.hour,
                t.minute,
                t.second,
                since.subsec_nanos()
            );
            let key = if format == LogFormat::Json { "msg" } else { "log" };
            let mut line =
                serde_json::json!({ key: format!("{ORIGIN}: {message}"), "level": level, "time": time }).to_string();
            line.push('\n');
            line
        }
    }
}

struct Utc {
    year: i32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

fn utc(secs: i64) -> Utc {
    // SAFETY: gmtime_r writes only into `tm`, which is ours and fully initialised (zeroed) beforehand.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let t: libc::time_t = secs as libc::time_t;
    unsafe { libc::gmtime_r(&t, &mut tm) };
    Utc {
        year: tm.tm_year + 1900,
        month: (tm.tm_mon + 1) as u32,
        day: tm.tm_mday as u32,
        hour: tm.tm_hour as u32,
        minute: tm.tm_min as u32,
        second: tm.tm_sec as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const AT: u64 = 1_796_221_324; // 2026-12-02T14:22:04Z

    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::new(AT, 123_456_789)
    }

    #[test]
    fn text_lines_look_like_runsc_s() {
        let line = format_line(LogFormat::Text, Level::WARN, at(), "hint \"a\" removed");
        let want = format!("W1202 14:22:04.123456 {:>7} mount-hints-hook] hint \"a\" removed\n", std::process::id());
        assert_eq!(line, want);
    }

    #[test]
    fn json_lines_carry_runsc_s_keys_and_levels() {
        for (format, key) in [(LogFormat::Json, "msg"), (LogFormat::JsonK8s, "log")] {
            for (level, name) in [(Level::ERROR, "error"), (Level::WARN, "warning"), (Level::INFO, "info")] {
                let line = format_line(format, level, at(), "x \"y\"");
                assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                assert_eq!(v[key], "mount-hints-hook: x \"y\"");
                assert_eq!(v["level"], name);
                assert_eq!(v["time"], "2026-12-02T14:22:04.123456789Z");
            }
        }
    }

    #[test]
    fn formats_parse_as_runsc_spells_them() {
        assert_eq!("json-k8s".parse(), Ok(LogFormat::JsonK8s));
        assert_eq!("text".parse(), Ok(LogFormat::Text));
        assert!("JSON".parse::<LogFormat>().is_err());
        assert_eq!(serde_json::to_string(&LogFormat::JsonK8s).unwrap(), "\"json-k8s\"");
    }
}
