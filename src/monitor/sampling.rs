//! Sampled request/response logging as JSON lines on stdout, with a size cap and redaction.

use std::io::Write;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::Value;

/// Placeholder written instead of a redacted value.
pub const REDACTED: &str = "[REDACTED]";

/// Where and how much to log.
#[derive(Clone, Debug, Default)]
pub struct ExchangeLog {
    /// Share of exchanges logged, in [0, 1].
    pub rate: f64,
    /// Most bytes of each body written.
    pub max_bytes: usize,
    /// Field names whose values are replaced by [`REDACTED`], at any depth.
    pub redact: Vec<String>,
}

impl ExchangeLog {
    /// Whether to log this exchange (random, at `rate`).
    pub fn should_log(&self) -> bool {
        self.rate > 0.0 && (self.rate >= 1.0 || fastrand::f64() < self.rate)
    }

    /// One JSON line for the exchange.
    pub fn line(
        &self,
        method: &Method,
        path: &str,
        status: StatusCode,
        latency: Duration,
        request: &[u8],
        response: &[u8],
    ) -> String {
        serde_json::json!({
            "time": jiff::Timestamp::now().to_string(),
            "kind": "drover.exchange",
            "method": method.as_str(),
            "path": path,
            "status": status.as_u16(),
            "latencyMs": latency.as_secs_f64() * 1000.0,
            "request": self.body(request),
            "response": self.body(response),
        })
        .to_string()
    }

    /// Writes the line to stdout (errors are ignored: logging never fails a request).
    pub fn write(
        &self,
        method: &Method,
        path: &str,
        status: StatusCode,
        latency: Duration,
        request: &[u8],
        response: &[u8],
    ) {
        let mut line = self.line(method, path, status, latency, request, response);
        line.push('\n');
        let _ = std::io::stdout().lock().write_all(line.as_bytes());
    }

    fn body(&self, bytes: &[u8]) -> Value {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(mut value) => {
                redact(&mut value, &self.redact);
                let text = value.to_string();
                if text.len() <= self.max_bytes {
                    value
                } else {
                    Value::String(truncate(&text, self.max_bytes))
                }
            }
            Err(_) => Value::String(truncate(&String::from_utf8_lossy(bytes), self.max_bytes)),
        }
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…[truncated {} bytes]", &text[..cut], text.len() - cut)
}

fn redact(value: &mut Value, fields: &[String]) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if fields.iter().any(|f| f == k) {
                    *v = Value::String(REDACTED.into());
                } else {
                    redact(v, fields);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact(v, fields)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_at_any_depth_and_caps_size() {
        let log = ExchangeLog {
            rate: 1.0,
            max_bytes: 60,
            redact: vec!["ssn".into()],
        };
        let line = log.line(
            &Method::POST,
            "/predict",
            StatusCode::OK,
            Duration::from_millis(3),
            br#"{"instances": [{"ssn": "123-45-6789", "age": 31}]}"#,
            &[0xff, 0xfe],
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        assert!(!line.contains("123-45-6789"));
        assert_eq!(v["request"]["instances"][0]["ssn"], REDACTED);
        assert_eq!(v["status"], 200);
        let long = log.line(
            &Method::POST,
            "/",
            StatusCode::OK,
            Duration::ZERO,
            "x".repeat(500).as_bytes(),
            b"{}",
        );
        assert!(long.contains("truncated"));
        assert!(long.len() < 400);
    }

    #[test]
    fn rate_zero_never_logs_and_one_always_does() {
        let never = ExchangeLog::default();
        assert!((0..1000).all(|_| !never.should_log()));
        let always = ExchangeLog {
            rate: 1.0,
            ..ExchangeLog::default()
        };
        assert!((0..1000).all(|_| always.should_log()));
    }
}
