//! The reference profile: what a model's training data looked like, binned, so the monitor can
//! histogram live traffic on the same bins and drift is measured against the right baseline.
//!
//! Format (version 1, documented in `docs/profile-format.md`): per feature a numeric layout
//! (interior quantile edges) or a categorical one (categories by frequency, plus "other"), the
//! bin counts, the row count and, for numeric features, mean and population standard deviation;
//! the same for the prediction and, optionally, the confidence.

use serde::{Deserialize, Serialize};

use crate::stats::{BinLayout, FeatureHistogram, StatsError};

/// Highest profile format version this Drover reads.
pub const PROFILE_VERSION: u32 = 1;
/// Most features a profile may describe (bounds memory and metric label sets).
pub const MAX_FEATURES: usize = 512;

/// A reference profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceProfile {
    /// Format version.
    pub version: u32,
    /// The model version whose training data this describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    /// Input features, in the model's column order.
    pub features: Vec<ProfiledColumn>,
    /// The prediction distribution on the training data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<ProfiledColumn>,
    /// The confidence distribution on the training data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<ProfiledColumn>,
}

/// One profiled column.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfiledColumn {
    /// Column name.
    pub name: String,
    /// How values are binned (`kind: numeric` with `edges`, or `kind: categorical` with
    /// `categories`).
    #[serde(flatten)]
    pub layout: BinLayout,
    /// Rows per bin (`edges.len() + 1`, or `categories.len() + 1` with "other" last).
    pub counts: Vec<u64>,
    /// Rows in all.
    pub count: u64,
    /// Mean (numeric columns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<f64>,
    /// Population standard deviation (numeric columns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<f64>,
}

/// Why a profile cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// Not JSON of the expected shape.
    #[error("profile is not valid JSON of the documented shape: {0}")]
    Parse(#[from] serde_json::Error),
    /// A newer format.
    #[error("profile version {0} is newer than this Drover reads ({PROFILE_VERSION})")]
    Version(u32),
    /// Too many features.
    #[error("profile has {0} features; at most {MAX_FEATURES} are supported")]
    TooManyFeatures(usize),
    /// A feature's bins are inconsistent.
    #[error("profile column {column:?}: {source}")]
    Column {
        /// Column name.
        column: String,
        /// What is wrong.
        source: StatsError,
    },
    /// Two features share a name.
    #[error("profile lists feature {0:?} twice")]
    DuplicateFeature(String),
}

impl ProfiledColumn {
    /// The column as a histogram (for drift measures against live ones).
    pub fn histogram(&self) -> Result<FeatureHistogram, ProfileError> {
        let h = FeatureHistogram::from_counts(
            self.layout.clone(),
            self.counts.clone(),
            self.mean,
            self.std,
        )
        .map_err(|source| ProfileError::Column {
            column: self.name.clone(),
            source,
        })?;
        if h.count() != self.count {
            return Err(ProfileError::Column {
                column: self.name.clone(),
                source: StatsError::InconsistentSnapshot {
                    reason: "count is not the sum of the bin counts",
                },
            });
        }
        Ok(h)
    }
}

impl ReferenceProfile {
    /// Parses and checks a profile.
    pub fn from_json(text: &[u8]) -> Result<Self, ProfileError> {
        let profile: ReferenceProfile = serde_json::from_slice(text)?;
        profile.check()?;
        Ok(profile)
    }

    /// Checks version, size and every column's bins.
    pub fn check(&self) -> Result<(), ProfileError> {
        if self.version > PROFILE_VERSION {
            return Err(ProfileError::Version(self.version));
        }
        if self.features.len() > MAX_FEATURES {
            return Err(ProfileError::TooManyFeatures(self.features.len()));
        }
        let mut seen = std::collections::HashSet::new();
        for column in self
            .features
            .iter()
            .chain(&self.prediction)
            .chain(&self.confidence)
        {
            column.histogram()?;
        }
        for f in &self.features {
            if !seen.insert(f.name.as_str()) {
                return Err(ProfileError::DuplicateFeature(f.name.clone()));
            }
        }
        Ok(())
    }

    /// The profiled feature called `name`.
    pub fn feature(&self, name: &str) -> Option<&ProfiledColumn> {
        self.features.iter().find(|f| f.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"{
      "version": 1, "modelVersion": "1.0.0",
      "features": [
        {"name": "amount", "kind": "numeric", "edges": [10.0, 100.0], "counts": [5, 3, 2], "count": 10, "mean": 50.0, "std": 20.0},
        {"name": "channel", "kind": "categorical", "categories": ["online", "pos"], "counts": [6, 4, 0], "count": 10}
      ],
      "prediction": {"name": "prediction", "kind": "categorical", "categories": ["0", "1"], "counts": [9, 1, 0], "count": 10}
    }"#;

    #[test]
    fn reads_the_documented_format() {
        let p = ReferenceProfile::from_json(SMALL.as_bytes()).unwrap();
        assert_eq!(p.model_version.as_deref(), Some("1.0.0"));
        let amount = p.feature("amount").unwrap().histogram().unwrap();
        assert_eq!(amount.counts(), &[5, 3, 2]);
        assert!((amount.mean().unwrap() - 50.0).abs() < 1e-9);
        assert!((amount.std_dev().unwrap() - 20.0).abs() < 1e-6);
        assert!(p.prediction.unwrap().histogram().is_ok());
    }

    #[test]
    fn refuses_inconsistent_profiles_with_the_column_named() {
        let bad = SMALL.replace(r#""counts": [5, 3, 2]"#, r#""counts": [5, 3]"#);
        let err = ReferenceProfile::from_json(bad.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("amount"), "{err}");
        let wrong_total = SMALL.replace(r#""count": 10, "mean""#, r#""count": 11, "mean""#);
        assert!(ReferenceProfile::from_json(wrong_total.as_bytes()).is_err());
        let newer = SMALL.replace(r#""version": 1"#, r#""version": 7"#);
        assert!(matches!(
            ReferenceProfile::from_json(newer.as_bytes()),
            Err(ProfileError::Version(7))
        ));
        assert!(ReferenceProfile::from_json(b"{not json").is_err());
    }
}
