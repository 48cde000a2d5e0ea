//! The process log on stderr: env_logger's text lines by default, or with `LOG_FORMAT=json` one JSON object per
//! line for a log collector: `timestamp`, `level`, `target`, `message`, the `request_id` of the request being
//! handled (if any), and the structured fields of the line (the access log's `method`, `route`, `path`, `status`,
//! `duration_ms`).

use std::io::Write;

use log::kv::{self, VisitSource};
use serde_json::{Map, Value};

use crate::request_id;

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

/// Installs the logger. `RUST_LOG` filters as usual (default `info`).
pub fn init(format: Format) {
    let mut builder = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if format == Format::Json {
        builder.format(|buf, record| {
            let line = json_line(record);
            // One write per line, so lines from several threads never interleave.
            writeln!(buf, "{line}")
        });
    }
    builder.init();
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
