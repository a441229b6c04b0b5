//! Go-syntax durations (`30s`, `5m`, `1h30m`) as they appear in the spec.
//!
//! The spec keeps durations as plain strings so that a malformed value can never make a
//! ModelDeployment undeserialisable (which would stall the watch); the CRD's `pattern` and CEL
//! rules refuse bad values at `kubectl apply`, and [`GoDuration::parse`] reports anything that
//! slipped past an older CRD as a validation error.

use std::borrow::Cow;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Regular expression every duration field must match (Go's `time.ParseDuration`, no sign).
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";

/// A duration in Go syntax, kept as the user wrote it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GoDuration(pub String);

impl GoDuration {
    /// A duration from its Go-syntax text.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The duration, or a message naming what is wrong with the text.
    pub fn parse(&self) -> Result<Duration, String> {
        let parsed: kube::core::Duration = self.0.parse().map_err(|e| {
            format!(
                "{:?} is not a Go duration (e.g. 30s, 5m, 1h30m): {e}",
                self.0
            )
        })?;
        if parsed.is_negative() {
            return Err(format!("{:?} must not be negative", self.0));
        }
        Ok(parsed.into())
    }
}

impl std::fmt::Display for GoDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl JsonSchema for GoDuration {
    fn schema_name() -> Cow<'static, str> {
        "GoDuration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "maxLength": 32,
            "pattern": DURATION_PATTERN,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_syntax() {
        assert_eq!(GoDuration::new("30s").parse(), Ok(Duration::from_secs(30)));
        assert_eq!(
            GoDuration::new("1h30m").parse(),
            Ok(Duration::from_secs(5400))
        );
        assert_eq!(
            GoDuration::new("300ms").parse(),
            Ok(Duration::from_millis(300))
        );
    }

    #[test]
    fn rejects_garbage_with_a_message() {
        let err = GoDuration::new("ten minutes").parse().unwrap_err();
        assert!(err.contains("not a Go duration"), "{err}");
        assert!(GoDuration::new("-5s").parse().is_err());
    }

    #[test]
    fn pattern_matches_what_parse_accepts() {
        let re = regex_lite::Regex::new(DURATION_PATTERN).unwrap();
        for ok in ["1s", "1m30s", "0.5h", "250ms", "10us"] {
            assert!(re.is_match(ok), "{ok}");
            assert!(GoDuration::new(ok).parse().is_ok(), "{ok}");
        }
        for bad in ["", "5", "s", "-1s", "1d", "1 m"] {
            assert!(!re.is_match(bad), "{bad}");
        }
    }
}
