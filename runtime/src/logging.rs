//! Logging as runc does it: `--log FILE` (stderr by default), `--log-format text|json`, and
//! `--debug`. In JSON, every line is `{"level":…,"msg":…,"time":…}`, which is what containerd's
//! shim reads back from the log file to show the real cause of a failure to its user.

use std::fmt::{self, Write as _};
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use liboci_cli::GlobalOpts;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::{FmtSpan, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// The two log line formats runc supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// `time level msg` lines for people.
    Text,
    /// runc/logrus JSON lines for engines.
    Json,
}

impl LogFormat {
    fn parse(value: Option<&str>) -> Result<Self> {
        match value {
            None | Some("text") => Ok(LogFormat::Text),
            Some("json") => Ok(LogFormat::Json),
            Some(other) => bail!("invalid --log-format {other:?}: expected \"text\" or \"json\""),
        }
    }
}

/// Where the log goes, kept so the final error can be written in the same format.
pub struct Log {
    format: LogFormat,
    sink: Sink,
}

/// A log destination shared between the tracing subscriber and the final error report.
#[derive(Clone)]
enum Sink {
    Stderr,
    File(Arc<Mutex<File>>),
}

impl Sink {
    fn write_line(&self, line: &str) {
        match self {
            Sink::Stderr => {
                let _ = writeln!(std::io::stderr(), "{line}");
            }
            Sink::File(file) => {
                if let Ok(mut file) = file.lock() {
                    let _ = writeln!(file, "{line}");
                }
            }
        }
    }
}

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Stderr => std::io::stderr().write(buf),
            Sink::File(file) => file
                .lock()
                .map_err(|_| std::io::Error::other("log file lock poisoned"))?
                .write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sets up the tracing subscriber from the global flags. Without `--debug` only warnings and
/// errors are logged, so a healthy start writes nothing.
pub fn init(global: &GlobalOpts) -> Result<Log> {
    let format = LogFormat::parse(global.log_format.as_deref())?;
    let sink = match &global.log {
        None => Sink::Stderr,
        Some(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open log file {}", path.display()))?;
            Sink::File(Arc::new(Mutex::new(file)))
        }
    };
    // libcontainer warns about every cgroup controller the host lacks; without --debug only
    // its errors are worth a log line.
    let filter = if global.debug {
        Targets::new().with_default(Level::DEBUG)
    } else {
        Targets::new()
            .with_default(Level::WARN)
            .with_target("libcontainer", Level::ERROR)
            .with_target("libcgroups", Level::ERROR)
    };
    let writer_sink = sink.clone();
    // The builder's own level filter (INFO by default) would hide --debug; Targets decides.
    let builder = tracing_subscriber::fmt()
        .with_max_level(Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer_sink.clone());
    // With --debug, each span logs its duration when it closes: that is where time goes.
    let builder = builder.with_span_events(if global.debug {
        FmtSpan::CLOSE
    } else {
        FmtSpan::NONE
    });
    let installed = match format {
        LogFormat::Text => builder.finish().with(filter).try_init(),
        LogFormat::Json => builder
            .event_format(RuncJson)
            .finish()
            .with(filter)
            .try_init(),
    };
    installed.map_err(|err| anyhow::anyhow!("cannot set up logging: {err}"))?;
    Ok(Log { format, sink })
}

impl Log {
    /// Writes the error that ends the command as one line: to the log in its format and, when
    /// the log is a file, to stderr as well so a person running the command sees it.
    pub fn report_error(&self, err: &anyhow::Error) {
        let msg = one_line(err);
        match (self.format, &self.sink) {
            (LogFormat::Json, _) => self.sink.write_line(&json_line("error", &msg)),
            (LogFormat::Text, Sink::File(_)) => self
                .sink
                .write_line(&format!("{} error {msg}", now_rfc3339())),
            (LogFormat::Text, Sink::Stderr) => {}
        }
        eprintln!("gpu-youki: {msg}");
    }
}

/// The whole context chain of an error on one line, outermost first.
pub fn one_line(err: &anyhow::Error) -> String {
    format!("{err:#}").replace('\n', " ")
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn json_line(level: &str, msg: &str) -> String {
    serde_json::json!({"level": level, "msg": msg, "time": now_rfc3339()}).to_string()
}

/// Formats tracing events as runc's JSON log lines.
struct RuncJson;

/// Collects an event's message and its other fields (appended as `key=value`).
#[derive(Default)]
struct MessageVisitor {
    message: String,
    fields: String,
}

impl Visit for MessageVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
}

impl<S, N> FormatEvent<S, N> for RuncJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut visitor = MessageVisitor::default();
        event.record(&mut visitor);
        let mut msg = visitor.message;
        // The event's own span path (for a span's close event, that span), as the text format
        // prints it: `gpu_stage:inventory`.
        if let Some(scope) = ctx.event_scope() {
            let path: Vec<&str> = scope.from_root().map(|span| span.name()).collect();
            let _ = write!(msg, " span={}", path.join(":"));
        }
        msg.push_str(&visitor.fields);
        let level = event.metadata().level().as_str().to_ascii_lowercase();
        writeln!(writer, "{}", json_line(&level, &msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_accepts_runc_values_only() {
        assert_eq!(LogFormat::parse(None).unwrap(), LogFormat::Text);
        assert_eq!(LogFormat::parse(Some("json")).unwrap(), LogFormat::Json);
        let err = LogFormat::parse(Some("xml")).unwrap_err().to_string();
        assert!(err.contains("\"xml\""), "{err}");
    }

    #[test]
    fn json_line_has_runc_fields() {
        let line = json_line("error", "exec: \"/x\": no such file");
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["level"], "error");
        assert_eq!(value["msg"], "exec: \"/x\": no such file");
        assert!(value["time"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn one_line_joins_the_context_chain() {
        let err = anyhow::anyhow!("inner\ncause").context("outer");
        assert_eq!(one_line(&err), "outer: inner cause");
    }
}
