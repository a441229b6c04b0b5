//! Input and prediction drift of a window of traffic against the reference profile: per
//! feature a score with the configured measure, plus the shift of mean and standard deviation
//! in units of the reference's spread. Pure; the steady-state watch and `drover drift` use it.

use serde::Serialize;

use crate::monitor::report::Report;
use crate::profile::{ProfiledColumn, ReferenceProfile};
use crate::stats::{DriftMethod, FeatureHistogram, drift};

/// Drift of one column.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ColumnDrift {
    /// Column name.
    pub name: String,
    /// Measure used (categorical columns use PSI where the configured one needs an order).
    pub method: &'static str,
    /// The score.
    pub score: f64,
    /// p-value, for measures that have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// Values in the window.
    pub samples: u64,
    /// (window mean − reference mean) / reference standard deviation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_shift: Option<f64>,
    /// window standard deviation / reference standard deviation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub std_ratio: Option<f64>,
    /// Score above the threshold, with enough samples.
    pub drifted: bool,
}

/// Drift of a window.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DriftAssessment {
    /// Features with enough samples, highest score first.
    pub features: Vec<ColumnDrift>,
    /// The prediction distribution, if the profile has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prediction: Option<ColumnDrift>,
    /// Features with fewer than `min_samples` values in the window: no verdict.
    pub inconclusive: Vec<String>,
    /// Features the window has no histogram for, or whose bins differ from the profile's.
    pub unmeasured: Vec<String>,
}

impl DriftAssessment {
    /// Names of drifted features, highest score first.
    pub fn drifted(&self) -> Vec<&str> {
        self.features
            .iter()
            .filter(|f| f.drifted)
            .map(|f| f.name.as_str())
            .collect()
    }
}

fn column(
    reference: &ProfiledColumn,
    window: &FeatureHistogram,
    method: DriftMethod,
    threshold: f64,
) -> Option<ColumnDrift> {
    let reference_h = reference.histogram().ok()?;
    let method = if reference_h.layout().is_numeric() || !method.needs_numeric_layout() {
        method
    } else {
        DriftMethod::Psi
    };
    let score = drift::score(method, &reference_h, window).ok()?;
    let (mean_shift, std_ratio) = match (
        reference.mean,
        reference.std,
        window.mean(),
        window.std_dev(),
    ) {
        (Some(rm), Some(rs), Some(wm), Some(ws)) if rs > 0.0 => {
            (Some((wm - rm) / rs), Some(ws / rs))
        }
        _ => (None, None),
    };
    Some(ColumnDrift {
        name: reference.name.clone(),
        method: method.name(),
        score: score.value,
        p_value: score.p_value,
        samples: window.count(),
        mean_shift,
        std_ratio,
        drifted: score.value > threshold,
    })
}

/// Measures a window (a report, or the delta of two) against the profile.
pub fn assess(
    profile: &ReferenceProfile,
    window: &Report,
    method: DriftMethod,
    threshold: f64,
    min_samples: u64,
) -> DriftAssessment {
    let mut out = DriftAssessment::default();
    for reference in &profile.features {
        let Some(live) = window.features.get(&reference.name) else {
            out.unmeasured.push(reference.name.clone());
            continue;
        };
        if live.count() < min_samples {
            out.inconclusive.push(reference.name.clone());
            continue;
        }
        match column(reference, live, method, threshold) {
            Some(d) => out.features.push(d),
            None => out.unmeasured.push(reference.name.clone()),
        }
    }
    out.features.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.name.cmp(&b.name))
    });
    if let (Some(reference), Some(live)) = (&profile.prediction, &window.prediction)
        && live.count() >= min_samples
    {
        out.prediction = column(reference, live, method, threshold);
    }
    out
}

/// The spec's drift method as a statistics measure.
pub fn method_of(spec: crate::api::DriftMethod) -> DriftMethod {
    match spec {
        crate::api::DriftMethod::Psi => DriftMethod::Psi,
        crate::api::DriftMethod::Ks => DriftMethod::Ks,
        crate::api::DriftMethod::JensenShannon => DriftMethod::JensenShannon,
        crate::api::DriftMethod::Wasserstein => DriftMethod::Wasserstein,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::recorder::{Exchange, Recorder};
    use serde_json::json;
    use std::time::Duration;

    fn profile() -> ReferenceProfile {
        ReferenceProfile::from_json(
            br#"{"version":1,"features":[
              {"name":"a","kind":"numeric","edges":[0,1,2],"counts":[250,250,250,250],"count":1000,"mean":1.0,"std":1.0},
              {"name":"b","kind":"numeric","edges":[0,1,2],"counts":[250,250,250,250],"count":1000,"mean":1.0,"std":1.0},
              {"name":"c","kind":"categorical","categories":["x","y"],"counts":[500,500,0],"count":1000}]}"#,
        )
        .unwrap()
    }

    #[test]
    fn only_the_shifted_feature_drifts() {
        let p = profile();
        let r = Recorder::new(Some(&p), "1", "i".into(), "t".into());
        let resp = json!({"prediction": 1});
        for i in 0..1000 {
            // a: uniform over the reference bins; b: shifted far right; c: balanced.
            let a = [-0.5, 0.5, 1.5, 2.5][i % 4];
            let req = json!({"a": a, "b": a + 10.0, "c": if i % 2 == 0 { "x" } else { "y" }});
            r.record(Exchange {
                status: 200,
                latency: Duration::from_millis(1),
                request: Some(Ok(&req)),
                response: Some(Ok(&resp)),
                terminating: false,
            });
        }
        let assessment = assess(&p, &r.report(), DriftMethod::Psi, 0.2, 100);
        assert_eq!(assessment.drifted(), vec!["b"]);
        let b = &assessment.features[0];
        assert!(b.mean_shift.unwrap() > 9.0);
        assert!(assessment.inconclusive.is_empty());
        let few = assess(&p, &r.report(), DriftMethod::Psi, 0.2, 5000);
        assert_eq!(few.inconclusive.len(), 3, "too few samples is no verdict");
        assert!(few.drifted().is_empty());
        let ks = assess(&p, &r.report(), DriftMethod::Ks, 0.2, 100);
        assert_eq!(
            ks.features.iter().find(|f| f.name == "c").unwrap().method,
            "psi"
        );
    }
}
