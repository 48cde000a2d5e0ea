//! The process log on stderr: env_logger's text lines by default, or with `LOG_FORMAT=json` one JSON object per
//! line for a log collector: `timestamp`, `level`, `target`, `message`, the `request_id` of the request being
//! handled (if any), and the structured fields of the line (the access log's `method`, `route`, `path`, `status`,
//! `duration_ms`).
//!
//! The access log's lines (INFO, target [`ACCESS_TARGET`], one per request) are gathered and written to stderr
//! every [`FLUSH_EVERY`] or once [`FLUSH_AT`] bytes wait, instead of one `write(2)` each: a write per line is a
//! real share of a light request's CPU (docs/benchmarks.md, "The access log's lines are gathered"). Every other
//! line is written at once, after the
//! access lines gathered before it, so the log keeps its order, and a warning or an error is never late. What is
//! still gathered is written at exit and before a panic's message.
//!
//! In the text format, uncoloured (the log is not a terminal), an access line is also formatted here, in exactly
//! env_logger's shape ([`write_access_line`]), in a buffer of the thread's own that is then copied to the gathered
//! bytes: through env_logger each line was formatted into a buffer of its own, copied again to strip colours it did
//! not have, and stamped with a freshly printed time, about a tenth of a `GET /ping`'s CPU (docs/benchmarks.md, "The
//! access line is formatted in place"). Every other line, and every line in JSON or in colour, is env_logger's.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log::kv::{self, VisitSource};
use serde_json::{Map, Value};

use crate::request_id;

/// The target of the access log's lines (http/server.rs).
pub const ACCESS_TARGET: &str = "billing::access";

/// Longest an access line waits before it is written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// Gathered bytes past which the line that crosses it writes them at once: bounds the memory, and a stalled stderr
/// holds up requests as it did before, rather than growing a buffer.
pub const FLUSH_AT: usize = 64 * 1024;

static OUTPUT: Output = Output::new();

thread_local! {
    /// Set while the logger formats a line that may wait (see the module's comment).
    static MAY_WAIT: Cell<bool> = const { Cell::new(false) };
    /// The second last stamped on an access line by this thread, and its text (`2026-12-06T18:49:46Z`).
    static STAMP: RefCell<(u64, [u8; 20])> = const { RefCell::new((u64::MAX, [b'0'; 20])) };
    /// The access line being formatted by this thread ([`Output::add_with`]).
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

struct Output {
    pending: Mutex<Vec<u8>>,
    /// Held from taking the gathered bytes to having written them, so that writes happen in the order taken.
    writing: Mutex<()>,
}

impl Output {
    const fn new() -> Self {
        Output { pending: Mutex::new(Vec::new()), writing: Mutex::new(()) }
    }

    fn add(&self, line: &[u8], may_wait: bool) {
        let full = {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            pending.extend_from_slice(line);
            pending.len() >= FLUSH_AT
        };
        if !may_wait || full {
            self.flush();
        }
    }

    /// Like [`Output::add`] for a line that may wait, formatted by `write` into this thread's own buffer first, so
    /// that the lock every request thread takes is held only to copy the finished line.
    fn add_with(&self, write: impl FnOnce(&mut Vec<u8>)) {
        LINE.with_borrow_mut(|line| {
            line.clear();
            write(line);
            self.add(line, true);
        });
    }

    fn flush(&self) {
        let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let gathered = std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        if !gathered.is_empty() {
            // As env_logger does with its own stderr target: a log that cannot be written is not the request's
            // failure.
            let _ = std::io::stderr().lock().write_all(&gathered);
        }
    }
}

/// The writer env_logger prints each formatted line to (one `write` per line).
struct Gathering;

impl Write for Gathering {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        OUTPUT.add(line, MAY_WAIT.get());
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// env_logger's logger, telling [`Gathering`] which lines may wait; with `plain_access`, access lines are
/// formatted by [`write_access_line`] instead.
struct Logger {
    inner: env_logger::Logger,
    plain_access: bool,
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    /// env_logger's `log` applies the filter itself; the access lines formatted here are filtered the same way.
    fn log(&self, record: &log::Record<'_>) {
        let may_wait = record.level() == log::Level::Info && record.target() == ACCESS_TARGET;
        if may_wait && self.plain_access {
            if self.inner.matches(record) {
                OUTPUT.add_with(|out| write_access_line(out, record, SystemTime::now()));
            }
            return;
        }
        MAY_WAIT.set(may_wait);
        self.inner.log(record);
        MAY_WAIT.set(false);
    }

    fn flush(&self) {
        OUTPUT.flush();
    }
}

/// Writes the gathered access lines now; `main` calls it before it returns.
pub fn flush() {
    OUTPUT.flush();
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

impl Format {
    /// `LOG_FORMAT`: unset or empty is text; anything but `text` or `json` is refused with a message.
    pub fn from_env_value(value: Option<&str>) -> Result<Self, String> {
        match value.map(str::trim) {
            None | Some("" | "text") => Ok(Format::Text),
            Some("json") => Ok(Format::Json),
            Some(other) => Err(format!("LOG_FORMAT must be text or json, got {other:?}")),
        }
    }
}

/// Installs the logger, the thread that writes the gathered access lines, and a panic hook that writes them before
/// the panic's message. `RUST_LOG` filters as usual (default `info`).
pub fn init(format: Format) {
    let mut builder = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if format == Format::Json {
        builder.format(|buf, record| {
            let line = json_line(record);
            // One write per line, so lines from several threads never interleave.
            writeln!(buf, "{line}")
        });
    }
    // env_logger colours only its own stderr target when that is a terminal; through the pipe it would not.
    let style = std::env::var("RUST_LOG_STYLE").ok();
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    if style.is_none() && terminal {
        builder.write_style(env_logger::WriteStyle::Always);
    }
    let coloured = match style.as_deref() {
        None => terminal,
        Some(value) => value == "always",
    };
    let logger = builder.target(env_logger::Target::Pipe(Box::new(Gathering))).build();
    let max_level = logger.filter();
    let plain_access = format == Format::Text && !coloured;
    if log::set_boxed_logger(Box::new(Logger { inner: logger, plain_access })).is_err() {
        return;
    }
    log::set_max_level(max_level);
    let started = std::thread::Builder::new().name("log-writer".into()).spawn(|| {
        loop {
            std::thread::sleep(FLUSH_EVERY);
            OUTPUT.flush();
        }
    });
    if let Err(e) = started {
        // Without the thread the access lines still go out, FLUSH_AT bytes at a time and with every other line.
        log::warn!("cannot start the log-writer thread ({e}); access-log lines are written in larger batches");
    }
    let panicked = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        OUTPUT.flush();
        panicked(info);
    }));
}

/// An access line as env_logger's default text format writes it uncoloured, `[2026-12-06T18:49:46Z INFO
/// billing::access] GET /ping 200 0.004ms`: the time to the second in UTC, the level padded to five, the target, the
/// message. The time's text is made once a second per thread. Tested against env_logger's own line.
fn write_access_line(out: &mut Vec<u8>, record: &log::Record<'_>, now: SystemTime) {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    out.push(b'[');
    STAMP.with_borrow_mut(|(second, text)| {
        if *second != secs {
            let at = i64::try_from(secs).ok().and_then(|s| chrono::DateTime::from_timestamp(s, 0)).unwrap_or_default();
            let mut cursor = std::io::Cursor::new(&mut text[..]);
            // 20 bytes exactly for years 0000-9999; past that the line gets a shortened stamp, never a panic.
            let _ = write!(cursor, "{}", at.format("%Y-%m-%dT%H:%M:%SZ"));
            *second = secs;
        }
        out.extend_from_slice(text);
    });
    // ` {:<5} {}] {}\n` of the level, the target and the message, with the level padded by hand and the message
    // written through `fmt::Write` rather than `io::Write`'s adapter: the padding, the level's `Display` and the
    // adapter were together about 2 % of a `GET /ping`'s CPU in `perf` (docs/benchmarks.md, "Routing by the table").
    let level = record.level().as_str();
    out.push(b' ');
    out.extend_from_slice(level.as_bytes());
    out.extend(std::iter::repeat_n(b' ', 5usize.saturating_sub(level.len())));
    out.push(b' ');
    out.extend_from_slice(record.target().as_bytes());
    out.extend_from_slice(b"] ");
    // Writing into a Vec cannot fail.
    let _ = std::fmt::write(&mut Appending(out), *record.args());
    out.push(b'\n');
}

/// `fmt::Write` into a byte buffer.
struct Appending<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Appending<'_> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        self.0.extend_from_slice(text.as_bytes());
        Ok(())
    }
}

/// One line's JSON: the fixed keys first, in this order, then the record's own fields.
#[derive(serde::Serialize)]
struct Line<'a> {
    timestamp: String,
    level: &'static str,
    target: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    #[serde(flatten)]
    fields: Map<String, Value>,
}

fn json_line(record: &log::Record<'_>) -> String {
    let request_id = request_id::current();
    let mut line = Line {
        timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        level: record.level().as_str(),
        target: record.target(),
        message: record.args().to_string(),
        request_id: request_id.as_ref().map(request_id::RequestId::as_str),
        fields: Map::new(),
    };
    // A field that cannot be read is left out; the message still carries the line's meaning.
    let _ = record.key_values().visit(&mut Fields(&mut line.fields));
    for fixed in ["timestamp", "level", "target", "message", "request_id"] {
        line.fields.remove(fixed);
    }
    // Serialising strings and numbers into a String cannot fail; should it ever, the message is not lost.
    serde_json::to_string(&line).unwrap_or_else(|_| format!("{{\"message\":{}}}", Value::String(line.message)))
}

/// Copies a record's key-values into the JSON object, numbers as numbers.
struct Fields<'a>(&'a mut Map<String, Value>);

impl<'kvs> VisitSource<'kvs> for Fields<'_> {
    fn visit_pair(&mut self, key: kv::Key<'kvs>, value: kv::Value<'kvs>) -> Result<(), kv::Error> {
        let json = if let Some(n) = value.to_u64() {
            Value::from(n)
        } else if let Some(n) = value.to_i64() {
            Value::from(n)
        } else if let Some(x) = value.to_f64() {
            // Three decimals are what a millisecond duration needs; JSON has no NaN, which becomes null.
            serde_json::Number::from_f64((x * 1000.0).round() / 1000.0).map_or(Value::Null, Value::Number)
        } else if let Some(b) = value.to_bool() {
            Value::from(b)
        } else {
            Value::from(value.to_string())
        };
        self.0.insert(key.as_str().to_owned(), json);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_lines_wait_and_any_other_line_writes_them_first() {
        let output = Output::new();
        let pending = |o: &Output| o.pending.lock().map(|p| p.len()).unwrap_or(usize::MAX);
        output.add(b"GET /ping 200\n", true);
        output.add(b"GET /ping 200\n", true);
        assert_eq!(pending(&output), 28, "access lines wait for the writer thread");
        output.add(b"a warning\n", false);
        assert_eq!(pending(&output), 0, "another line is written at once, with the access lines before it");
        let long = vec![b'x'; FLUSH_AT];
        output.add(&long, true);
        assert_eq!(pending(&output), 0, "past FLUSH_AT the gathered lines are written at once");
    }

    /// The line written in place is byte for byte env_logger's uncoloured one, stamped in the same second.
    #[test]
    fn an_access_line_in_place_is_env_loggers_line() -> Result<(), String> {
        #[derive(Clone, Default)]
        struct Captured(std::sync::Arc<Mutex<Vec<u8>>>);
        impl Write for Captured {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let captured = Captured::default();
        let logger = env_logger::Builder::new()
            .parse_filters("info")
            .write_style(env_logger::WriteStyle::Never)
            .target(env_logger::Target::Pipe(Box::new(captured.clone())))
            .build();
        let (method, path, status, millis) = ("GET", "/get/7", 404u16, 0.004f64);
        let kvs: &[(&str, kv::Value<'_>)] = &[("status", kv::Value::from(status))];
        for _ in 0..3 {
            captured.0.lock().unwrap_or_else(PoisonError::into_inner).clear();
            let args = format_args!("{method} {path} {status} {millis:.3}ms");
            let record = log::Record::builder()
                .args(args)
                .level(log::Level::Info)
                .target(ACCESS_TARGET)
                .key_values(&kvs)
                .build();
            let before = SystemTime::now();
            log::Log::log(&logger, &record);
            let mut ours = Vec::new();
            write_access_line(&mut ours, &record, SystemTime::now());
            let theirs = captured.0.lock().unwrap_or_else(PoisonError::into_inner).clone();
            let second = |t: SystemTime| t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
            if second(before) != second(SystemTime::now()) {
                continue; // a second ended between the two lines: their stamps may differ
            }
            let (ours, theirs) = (String::from_utf8_lossy(&ours), String::from_utf8_lossy(&theirs));
            assert_eq!(ours, theirs);
            assert!(ours.ends_with(" INFO  billing::access] GET /get/7 404 0.004ms\n"), "{ours}");
            return Ok(());
        }
        Err("three tries each straddled a second".into())
    }

    #[test]
    fn a_stamp_is_remade_when_the_second_changes() {
        let args = format_args!("GET /ping 200 0.001ms");
        let record = log::Record::builder().args(args).level(log::Level::Info).target(ACCESS_TARGET).build();
        let mut a = Vec::new();
        write_access_line(&mut a, &record, UNIX_EPOCH + Duration::from_secs(1_796_550_586));
        let mut b = Vec::new();
        write_access_line(&mut b, &record, UNIX_EPOCH + Duration::from_secs(1_796_550_587));
        assert_eq!(String::from_utf8_lossy(&a), "[2026-12-06T09:49:46Z INFO  billing::access] GET /ping 200 0.001ms\n");
        assert_eq!(String::from_utf8_lossy(&b), "[2026-12-06T09:49:47Z INFO  billing::access] GET /ping 200 0.001ms\n");
    }

    #[test]
    fn log_format_values() {
        assert_eq!(Format::from_env_value(None), Ok(Format::Text));
        assert_eq!(Format::from_env_value(Some("")), Ok(Format::Text));
        assert_eq!(Format::from_env_value(Some("json")), Ok(Format::Json));
        assert!(Format::from_env_value(Some("JSON!")).is_err_and(|e| e.contains("text or json")));
    }

    #[test]
    fn a_record_becomes_one_json_object_with_its_fields() -> Result<(), String> {
        let kvs: &[(&str, kv::Value<'_>)] =
            &[("status", kv::Value::from(201u16)), ("duration_ms", kv::Value::from(0.12345f64))];
        let args = format_args!("POST /add 201");
        let record = log::Record::builder()
            .args(args)
            .level(log::Level::Info)
            .target("billing::access")
            .key_values(&kvs)
            .build();
        let line: Value = serde_json::from_str(&json_line(&record)).map_err(|e| e.to_string())?;
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["target"], "billing::access");
        assert_eq!(line["message"], "POST /add 201");
        assert_eq!(line["status"], 201);
        assert_eq!(line["duration_ms"], 0.123);
        let stamp = line["timestamp"].as_str().ok_or("no timestamp")?;
        chrono::DateTime::parse_from_rfc3339(stamp).map_err(|e| format!("{stamp}: {e}"))?;
        assert!(line.get("request_id").is_none(), "no request is being handled here");
        Ok(())
    }
}
