//! Delayed ground truth (issue 7, first part): prediction tokens and the performance counters
//! labels feed.
//!
//! Every response the monitor passes can carry a **prediction token** in header
//! `X-Drover-Prediction-Token`: the revision, the prediction and the time, signed with
//! HMAC-SHA-256 under a key every pod of the ModelDeployment derives from its monitor token
//! Secret. So *any* pod can accept `POST /drover/feedback {"token": ..., "label": ...}` (a client
//! sends feedback to the Service, which picks a random pod) and check, without shared state,
//! that the prediction was really made by this revision and when.
//!
//! Token: `base64url(payload) "." base64url(mac)`, payload the compact JSON
//! `{"r": revision, "p": prediction, "t": unix seconds, "n": nonce}`. The nonce makes every
//! token unique, and feedback is idempotent per token on each pod ([`SeenTokens`]). Across
//! pods, every label a pod counts is also written to its feedback log ([`log`]), which the
//! operator reads with each report to subtract a token counted by two pods
//! (`crate::collect::dedup`).
//!
//! Pure: time comes in as an argument; the key is bytes.

pub mod log;

use std::collections::{BTreeMap, HashSet, VecDeque};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Response header carrying the prediction token.
pub const TOKEN_HEADER: &str = "x-drover-prediction-token";
/// Longest token accepted (a prediction is small; anything larger is not ours).
pub const MAX_TOKEN_BYTES: usize = 2048;
/// Most distinct classes counted; labels beyond are counted under `other`.
pub const MAX_CLASSES: usize = 64;

type HmacSha256 = Hmac<Sha256>;

/// The feedback key of a ModelDeployment, derived from its monitor token (so no second Secret
/// is needed, and the report token itself is never used as a MAC key).
pub fn key_from_monitor_token(token: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"drover.dev/feedback/v1\n");
    h.update(token.trim().as_bytes());
    h.finalize().into()
}

/// What a token says.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// Revision that served the prediction.
    #[serde(rename = "r")]
    pub revision: String,
    /// The prediction.
    #[serde(rename = "p")]
    pub prediction: Value,
    /// When (Unix seconds).
    #[serde(rename = "t")]
    pub time: i64,
    /// Random per prediction: makes each token unique.
    #[serde(rename = "n")]
    pub nonce: u64,
}

/// The 64-bit id of a token: the first 8 bytes of its MAC (`None` when the token does not
/// have one to decode).
///
/// The MAC is HMAC-SHA-256 under the ModelDeployment's secret key over a payload that carries a
/// random 64-bit nonce, so the ids of distinct tokens are independent uniform 64-bit values
/// nobody without the key can choose: among the 200,000 ids the operator remembers, any two
/// collide with a probability of about n²/2⁶⁵ ≈ 10⁻⁹. A token is always the same id (the id
/// is read from the decoded MAC bytes, not from their text).
pub fn token_id(token: &str) -> Option<u64> {
    let (_, tag) = token.split_once('.')?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    let first: [u8; 8] = tag.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(first))
}

/// A verified label to count: the token's id, what it says, and the truth.
#[derive(Clone, Copy, Debug)]
pub struct Labelled<'a> {
    /// How labels compare with predictions.
    pub task: Task,
    /// The prediction token's id ([`token_id`]), the one the pod's duplicate check, its
    /// feedback log and the operator all know it by.
    pub id: u64,
    /// What the token says (verified).
    pub claims: &'a Claims,
    /// The true label.
    pub label: &'a Value,
}

/// Signs `claims`.
pub fn sign(key: &[u8], claims: &Claims) -> String {
    let payload = serde_json::to_vec(claims).unwrap_or_default();
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        // HMAC takes keys of any length; this cannot happen.
        Err(_) => return String::new(),
    };
    mac.update(&payload);
    let tag = mac.finalize().into_bytes();
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(&payload),
        URL_SAFE_NO_PAD.encode(tag)
    )
}

/// Why feedback was refused (each a counter and an HTTP answer).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FeedbackError {
    /// Not `{"token": string, "label": ...}`.
    #[error("feedback must be a JSON object {{\"token\": string, \"label\": value}}: {0}")]
    Malformed(String),
    /// The token is not one of ours (bad encoding or signature).
    #[error("the prediction token is not valid")]
    Forged,
    /// Older than the accepted age.
    #[error("the prediction token expired ({age_seconds} s old, at most {max_seconds} s)")]
    Expired {
        /// Its age.
        age_seconds: i64,
        /// The limit.
        max_seconds: i64,
    },
    /// Made by another revision than this pod's.
    #[error("the prediction was made by revision {0}, not this one")]
    OtherRevision(String),
    /// The label does not fit the task (a string for regression, a float class…).
    #[error("label {0} does not fit this model's task")]
    WrongLabelType(String),
    /// Already counted (idempotent per token).
    #[error("feedback for this prediction was already counted")]
    Duplicate,
}

impl FeedbackError {
    /// Bounded counter label.
    pub fn as_str(&self) -> &'static str {
        match self {
            FeedbackError::Malformed(_) => "malformed",
            FeedbackError::Forged => "forged",
            FeedbackError::Expired { .. } => "expired",
            FeedbackError::OtherRevision(_) => "other_revision",
            FeedbackError::WrongLabelType(_) => "wrong_label_type",
            FeedbackError::Duplicate => "duplicate",
        }
    }

    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            FeedbackError::Malformed(_) | FeedbackError::WrongLabelType(_) => 400,
            FeedbackError::Forged => 401,
            FeedbackError::Expired { .. } => 410,
            FeedbackError::OtherRevision(_) | FeedbackError::Duplicate => 409,
        }
    }
}

/// Checks `token` under `key` for `revision` at `now` (Unix seconds).
pub fn verify(
    key: &[u8],
    token: &str,
    revision: &str,
    now: i64,
    max_age_seconds: i64,
) -> Result<Claims, FeedbackError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(FeedbackError::Forged);
    }
    let (payload, tag) = token.split_once('.').ok_or(FeedbackError::Forged)?;
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| FeedbackError::Forged)?;
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| FeedbackError::Forged)?;
    let mut mac = HmacSha256::new_from_slice(key).map_err(|_| FeedbackError::Forged)?;
    mac.update(&payload);
    // Constant-time comparison.
    mac.verify_slice(&tag).map_err(|_| FeedbackError::Forged)?;
    let claims: Claims = serde_json::from_slice(&payload).map_err(|_| FeedbackError::Forged)?;
    let age = now.saturating_sub(claims.time);
    if age > max_age_seconds {
        return Err(FeedbackError::Expired {
            age_seconds: age,
            max_seconds: max_age_seconds,
        });
    }
    if claims.revision != revision {
        return Err(FeedbackError::OtherRevision(claims.revision));
    }
    Ok(claims)
}

/// A feedback request body.
#[derive(Clone, Debug, PartialEq)]
pub struct Feedback {
    /// The prediction token.
    pub token: String,
    /// The true label.
    pub label: Value,
}

/// Parses `{"token": "...", "label": ...}`.
pub fn parse(body: &[u8]) -> Result<Feedback, FeedbackError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| FeedbackError::Malformed(e.to_string()))?;
    let token = value
        .get("token")
        .and_then(Value::as_str)
        .ok_or_else(|| FeedbackError::Malformed("no string \"token\"".into()))?
        .to_string();
    let label = value
        .get("label")
        .cloned()
        .filter(|l| !l.is_null())
        .ok_or_else(|| FeedbackError::Malformed("no \"label\"".into()))?;
    Ok(Feedback { token, label })
}

/// Whether labels are classes or numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Task {
    /// Classes (strings, integers, booleans): accuracy, precision, recall, F1.
    #[default]
    Classification,
    /// Numbers: MAE, RMSE.
    Regression,
}

/// A class as counted: the JSON value's canonical text (`1`, `"fraud"` → `fraud`, `true`).
fn class_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        // 1.0 is class 1; 0.7 is not a class.
        Value::Number(n) => n
            .as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
            .map(|f| format!("{}", f as i64)),
        _ => None,
    }
}

/// Per-class counts of a classifier: how often each class was predicted, was true, and both.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClassCounts {
    /// Predicted this class and it was right.
    pub true_positives: u64,
    /// Predicted this class.
    pub predicted: u64,
    /// The label was this class.
    pub actual: u64,
}

/// Cumulative performance counters of one monitor, mergeable across pods and subtractable
/// between two reports (like every counter in the report).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Performance {
    /// Labelled predictions counted.
    pub labelled: u64,
    /// Classification: correct predictions.
    #[serde(default)]
    pub correct: u64,
    /// Classification: per class (at most [`MAX_CLASSES`], the rest under `other`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub classes: BTreeMap<String, ClassCounts>,
    /// Regression: sum of |prediction − label|.
    #[serde(default)]
    pub abs_error_sum: f64,
    /// Regression: sum of (prediction − label)².
    #[serde(default)]
    pub sq_error_sum: f64,
    /// Feedback refused, by reason ([`FeedbackError::as_str`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refused: BTreeMap<String, u64>,
    /// Set by the operator, never by a monitor: labels a pod counted for a token another pod
    /// (or the same one, earlier) had already counted, subtracted from the figures above.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub duplicates: u64,
    /// Set by the operator, never by a monitor: labels counted without the cross-pod check,
    /// because a monitor's feedback log overflowed between two scrapes (they may include
    /// duplicates).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unverified: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What one counted label added to a [`Performance`]: exactly what is needed to subtract it
/// again ([`Performance::unrecord`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Contribution {
    /// A class label: the class slots counted (names of [`Performance::classes`], `other`
    /// beyond [`MAX_CLASSES`]) and whether the prediction was right.
    Class {
        /// Slot of the true class.
        actual: String,
        /// Slot of the predicted class.
        predicted: String,
        /// The prediction was right (counted in `correct`, and as a true positive).
        correct: bool,
    },
    /// A regression label: prediction − label (the error sums add its absolute value and
    /// its square).
    Error(f64),
}

/// Why a contribution cannot be subtracted from a [`Performance`]: it was never counted there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the label is not part of these counters")]
pub struct NotCounted;

impl Performance {
    /// Counts one labelled prediction; what it added comes back, for the feedback log.
    pub fn record(
        &mut self,
        task: Task,
        prediction: &Value,
        label: &Value,
    ) -> Result<Contribution, FeedbackError> {
        match task {
            Task::Classification => {
                let truth = class_of(label)
                    .ok_or_else(|| FeedbackError::WrongLabelType(label.to_string()))?;
                let predicted = class_of(prediction)
                    .ok_or_else(|| FeedbackError::WrongLabelType(prediction.to_string()))?;
                let correct = truth == predicted;
                // Beyond MAX_CLASSES distinct classes, new ones are counted as `other`.
                let slot = |classes: &BTreeMap<String, ClassCounts>, c: String| {
                    if classes.contains_key(&c) || classes.len() < MAX_CLASSES {
                        c
                    } else {
                        "other".to_string()
                    }
                };
                let actual = slot(&self.classes, truth);
                self.classes.entry(actual.clone()).or_default();
                let predicted = slot(&self.classes, predicted);
                let contribution = Contribution::Class {
                    actual,
                    predicted,
                    correct,
                };
                self.add(&contribution);
                Ok(contribution)
            }
            Task::Regression => {
                let truth = label
                    .as_f64()
                    .filter(|f| f.is_finite())
                    .ok_or_else(|| FeedbackError::WrongLabelType(label.to_string()))?;
                let predicted = prediction
                    .as_f64()
                    .filter(|f| f.is_finite())
                    .ok_or_else(|| FeedbackError::WrongLabelType(prediction.to_string()))?;
                let e = predicted - truth;
                // A sum that overflows would be written as `null` in the report, which no
                // reader parses: such a label cannot be counted.
                if !(self.abs_error_sum + e.abs()).is_finite()
                    || !(self.sq_error_sum + e * e).is_finite()
                {
                    return Err(FeedbackError::WrongLabelType(label.to_string()));
                }
                let contribution = Contribution::Error(e);
                self.add(&contribution);
                Ok(contribution)
            }
        }
    }

    /// Adds what one label contributed (as [`record`](Self::record) did; the operator sums
    /// what it took out of a pod's counters this way).
    pub fn add(&mut self, c: &Contribution) {
        self.labelled += 1;
        match c {
            Contribution::Class {
                actual,
                predicted,
                correct,
            } => {
                if *correct {
                    self.correct += 1;
                }
                self.classes.entry(actual.clone()).or_default().actual += 1;
                let entry = self.classes.entry(predicted.clone()).or_default();
                entry.predicted += 1;
                if *correct && actual == predicted {
                    entry.true_positives += 1;
                }
            }
            Contribution::Error(e) => {
                self.abs_error_sum += e.abs();
                self.sq_error_sum += e * e;
            }
        }
    }

    /// Subtracts one label counted earlier (the exact inverse of the [`record`](Self::record)
    /// that returned `c`): the operator takes a label two pods counted out of one of them.
    /// Nothing changes when `c` cannot have been counted here.
    ///
    /// Counts come back exactly, and a class slot the label created goes away again. The error
    /// sums are floating-point: subtracting the term is exact whenever the sum held it exactly
    /// (whole or binary-fraction errors), else within rounding; they never go below zero.
    pub fn unrecord(&mut self, c: &Contribution) -> Result<(), NotCounted> {
        let labelled = self.labelled.checked_sub(1).ok_or(NotCounted)?;
        match c {
            Contribution::Class {
                actual,
                predicted,
                correct,
            } => {
                let tp = *correct && actual == predicted;
                let correct_after = if *correct {
                    self.correct.checked_sub(1).ok_or(NotCounted)?
                } else {
                    self.correct
                };
                // Check every counter first, so a refusal leaves nothing half-subtracted.
                let mut actual_after = self.classes.get(actual).cloned().ok_or(NotCounted)?;
                actual_after.actual = actual_after.actual.checked_sub(1).ok_or(NotCounted)?;
                let mut predicted_after = if actual == predicted {
                    actual_after.clone()
                } else {
                    self.classes.get(predicted).cloned().ok_or(NotCounted)?
                };
                predicted_after.predicted =
                    predicted_after.predicted.checked_sub(1).ok_or(NotCounted)?;
                if tp {
                    predicted_after.true_positives = predicted_after
                        .true_positives
                        .checked_sub(1)
                        .ok_or(NotCounted)?;
                }
                if actual == predicted {
                    actual_after = predicted_after.clone();
                }
                self.labelled = labelled;
                self.correct = correct_after;
                for (slot, after) in [(actual, actual_after), (predicted, predicted_after)] {
                    if after == ClassCounts::default() {
                        self.classes.remove(slot);
                    } else {
                        self.classes.insert(slot.clone(), after);
                    }
                }
            }
            Contribution::Error(e) => {
                self.labelled = labelled;
                if labelled == 0 {
                    // Nothing is left: no rounding remainder either.
                    self.abs_error_sum = 0.0;
                    self.sq_error_sum = 0.0;
                } else {
                    self.abs_error_sum = (self.abs_error_sum - e.abs()).max(0.0);
                    self.sq_error_sum = (self.sq_error_sum - e * e).max(0.0);
                }
            }
        }
        Ok(())
    }

    /// Adds another monitor's counters.
    pub fn merge(&self, other: &Performance) -> Performance {
        let mut out = self.clone();
        out.labelled += other.labelled;
        out.correct += other.correct;
        out.abs_error_sum += other.abs_error_sum;
        out.sq_error_sum += other.sq_error_sum;
        for (c, n) in &other.classes {
            let e = out.classes.entry(c.clone()).or_default();
            e.true_positives += n.true_positives;
            e.predicted += n.predicted;
            e.actual += n.actual;
        }
        for (reason, n) in &other.refused {
            *out.refused.entry(reason.clone()).or_default() += n;
        }
        out.duplicates += other.duplicates;
        out.unverified += other.unverified;
        out
    }

    /// Counts feedback refused for `why`.
    pub fn refuse(&mut self, why: &FeedbackError) {
        *self.refused.entry(why.as_str().to_string()).or_default() += 1;
    }

    /// What was counted since `earlier` (a report of the same monitor); `None` when a counter
    /// went backwards. A class or reason missing on either side counts as zero (a label taken
    /// out again can leave a slot that is gone).
    pub fn delta(&self, earlier: &Performance) -> Option<Performance> {
        let sub = |a: u64, b: u64| a.checked_sub(b);
        let mut classes = BTreeMap::new();
        let zero = ClassCounts::default();
        for c in self.classes.keys().chain(earlier.classes.keys()) {
            if classes.contains_key(c) {
                continue;
            }
            let now = self.classes.get(c).unwrap_or(&zero);
            let before = earlier.classes.get(c).unwrap_or(&zero);
            let d = ClassCounts {
                true_positives: sub(now.true_positives, before.true_positives)?,
                predicted: sub(now.predicted, before.predicted)?,
                actual: sub(now.actual, before.actual)?,
            };
            // A slot only the earlier report had (all zero now, so zero then) is not kept.
            if self.classes.contains_key(c) {
                classes.insert(c.clone(), d);
            }
        }
        let mut refused = BTreeMap::new();
        for r in self.refused.keys().chain(earlier.refused.keys()) {
            let n = sub(
                self.refused.get(r).copied().unwrap_or(0),
                earlier.refused.get(r).copied().unwrap_or(0),
            )?;
            if self.refused.contains_key(r) {
                refused.insert(r.clone(), n);
            }
        }
        Some(Performance {
            labelled: sub(self.labelled, earlier.labelled)?,
            correct: sub(self.correct, earlier.correct)?,
            classes,
            abs_error_sum: (self.abs_error_sum - earlier.abs_error_sum).max(0.0),
            sq_error_sum: (self.sq_error_sum - earlier.sq_error_sum).max(0.0),
            refused,
            duplicates: sub(self.duplicates, earlier.duplicates)?,
            unverified: sub(self.unverified, earlier.unverified)?,
        })
    }

    /// Share of correct predictions.
    pub fn accuracy(&self) -> Option<f64> {
        (self.labelled > 0 && !self.classes.is_empty())
            .then(|| self.correct as f64 / self.labelled as f64)
    }

    /// Precision, recall and F1 of `positive` (binary), or macro-averaged over the classes seen
    /// (`None` for `positive`).
    pub fn precision_recall_f1(&self, positive: Option<&str>) -> Option<(f64, f64, f64)> {
        let per_class = |c: &ClassCounts| {
            let p = if c.predicted > 0 {
                c.true_positives as f64 / c.predicted as f64
            } else {
                0.0
            };
            let r = if c.actual > 0 {
                c.true_positives as f64 / c.actual as f64
            } else {
                0.0
            };
            let f = if p + r > 0.0 {
                2.0 * p * r / (p + r)
            } else {
                0.0
            };
            (p, r, f)
        };
        match positive {
            Some(class) => {
                let c = self.classes.get(class)?;
                Some(per_class(c))
            }
            None => {
                let seen: Vec<(f64, f64, f64)> = self
                    .classes
                    .values()
                    .filter(|c| c.actual > 0 || c.predicted > 0)
                    .map(per_class)
                    .collect();
                if seen.is_empty() {
                    return None;
                }
                let n = seen.len() as f64;
                Some((
                    seen.iter().map(|s| s.0).sum::<f64>() / n,
                    seen.iter().map(|s| s.1).sum::<f64>() / n,
                    seen.iter().map(|s| s.2).sum::<f64>() / n,
                ))
            }
        }
    }

    /// Mean absolute error (regression).
    pub fn mae(&self) -> Option<f64> {
        (self.labelled > 0 && self.classes.is_empty())
            .then(|| self.abs_error_sum / self.labelled as f64)
    }

    /// Root mean squared error (regression).
    pub fn rmse(&self) -> Option<f64> {
        (self.labelled > 0 && self.classes.is_empty())
            .then(|| (self.sq_error_sum / self.labelled as f64).sqrt())
    }
}

/// The tokens a pod has counted feedback for, bounded (oldest forgotten first): a client that
/// retries is counted once.
#[derive(Debug)]
pub struct SeenTokens {
    set: HashSet<u64>,
    order: VecDeque<u64>,
    capacity: usize,
}

impl SeenTokens {
    /// Remembers at most `capacity` tokens.
    pub fn new(capacity: usize) -> Self {
        Self {
            set: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records the token with this id ([`token_id`]: the first 64 bits of its MAC, the id the
    /// feedback log and the operator know it by); `false` when it was seen already.
    pub fn first_time(&mut self, id: u64) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;

    fn claims(revision: &str, prediction: Value, nonce: u64) -> Claims {
        Claims {
            revision: revision.into(),
            prediction,
            time: NOW - 60,
            nonce,
        }
    }

    #[test]
    fn a_token_signed_by_one_pod_verifies_on_another_of_the_same_model() {
        let key = key_from_monitor_token("secret-token\n");
        let other_pod_key = key_from_monitor_token("secret-token");
        let token = sign(&key, &claims("abc", json!(1), 7));
        let c = verify(&other_pod_key, &token, "abc", NOW, 3600).unwrap();
        assert_eq!(c.prediction, json!(1));
        assert_eq!(c.nonce, 7);
    }

    #[test]
    fn forged_expired_and_foreign_tokens_are_refused() {
        let key = key_from_monitor_token("k");
        let token = sign(&key, &claims("abc", json!(1), 7));
        // Another model's key.
        assert_eq!(
            verify(&key_from_monitor_token("other"), &token, "abc", NOW, 3600),
            Err(FeedbackError::Forged)
        );
        // A prediction changed after signing.
        let (payload, tag) = token.split_once('.').unwrap();
        let mut forged: Claims =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        forged.prediction = json!(0);
        let tampered = format!(
            "{}.{tag}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap())
        );
        assert_eq!(
            verify(&key, &tampered, "abc", NOW, 3600),
            Err(FeedbackError::Forged)
        );
        for junk in ["", ".", "abc", "a.b.c", &"x".repeat(5000)] {
            assert_eq!(
                verify(&key, junk, "abc", NOW, 3600),
                Err(FeedbackError::Forged),
                "{junk}"
            );
        }
        assert!(matches!(
            verify(&key, &token, "abc", NOW + 7200, 3600),
            Err(FeedbackError::Expired { .. })
        ));
        assert_eq!(
            verify(&key, &token, "def", NOW, 3600),
            Err(FeedbackError::OtherRevision("abc".into()))
        );
    }

    #[test]
    fn feedback_bodies_are_parsed_or_refused_clearly() {
        let f = parse(br#"{"token": "t", "label": "fraud"}"#).unwrap();
        assert_eq!(f.label, json!("fraud"));
        for bad in [
            &b"not json"[..],
            br#"{"label": 1}"#,
            br#"{"token": 5, "label": 1}"#,
            br#"{"token": "t"}"#,
            br#"{"token": "t", "label": null}"#,
        ] {
            assert!(matches!(parse(bad), Err(FeedbackError::Malformed(_))));
        }
    }

    #[test]
    fn classification_metrics_match_hand_counts() {
        // 10 labelled predictions of a binary classifier: TP 3, FP 1, FN 2, TN 4.
        let mut p = Performance::default();
        let pairs = [
            (1, 1),
            (1, 1),
            (1, 1),
            (1, 0),
            (0, 1),
            (0, 1),
            (0, 0),
            (0, 0),
            (0, 0),
            (0, 0),
        ];
        for (pred, truth) in pairs {
            p.record(Task::Classification, &json!(pred), &json!(truth))
                .unwrap();
        }
        assert_eq!(p.accuracy(), Some(0.7));
        let (precision, recall, f1) = p.precision_recall_f1(Some("1")).unwrap();
        assert!((precision - 0.75).abs() < 1e-12);
        assert!((recall - 0.6).abs() < 1e-12);
        assert!((f1 - 2.0 * 0.75 * 0.6 / 1.35).abs() < 1e-12);
        // Classes as strings, booleans and 1.0 count as the same kind of thing.
        assert!(
            p.record(Task::Classification, &json!(1.0), &json!(1))
                .is_ok()
        );
        assert_eq!(p.classes["1"].true_positives, 4);
        assert!(matches!(
            p.record(Task::Classification, &json!(1), &json!(0.3)),
            Err(FeedbackError::WrongLabelType(_))
        ));
        assert!(p.mae().is_none());
    }

    #[test]
    fn regression_metrics_and_bad_labels() {
        let mut p = Performance::default();
        for (pred, truth) in [(10.0, 12.0), (5.0, 5.0), (3.0, 0.0)] {
            p.record(Task::Regression, &json!(pred), &json!(truth))
                .unwrap();
        }
        assert!((p.mae().unwrap() - 5.0 / 3.0).abs() < 1e-12);
        assert!((p.rmse().unwrap() - (13.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!(p.accuracy().is_none());
        assert!(matches!(
            p.record(Task::Regression, &json!(1.0), &json!("high")),
            Err(FeedbackError::WrongLabelType(_))
        ));
    }

    #[test]
    fn counters_merge_across_pods_and_subtract_between_reports() {
        let mut a = Performance::default();
        let mut b = Performance::default();
        a.record(Task::Classification, &json!("x"), &json!("x"))
            .unwrap();
        let earlier = a.clone();
        a.record(Task::Classification, &json!("x"), &json!("y"))
            .unwrap();
        b.record(Task::Classification, &json!("y"), &json!("y"))
            .unwrap();
        let merged = a.merge(&b);
        assert_eq!(merged.labelled, 3);
        assert_eq!(merged.correct, 2);
        let d = a.delta(&earlier).unwrap();
        assert_eq!(d.labelled, 1);
        assert_eq!(d.correct, 0);
        assert_eq!(d.classes["y"].actual, 1);
        assert!(earlier.delta(&a).is_none(), "counters never go backwards");
    }

    #[test]
    fn unrecording_a_label_gives_back_the_counters_before_it() {
        // Classification: every kind of label (right, wrong, a new class, `other` beyond the
        // cap, right and wrong within `other`) recorded on top of some history, then taken out.
        let mut base = Performance::default();
        for (p, t) in [(1, 1), (0, 1), (0, 0), (2, 2)] {
            base.record(Task::Classification, &json!(p), &json!(t))
                .unwrap();
        }
        for (p, t) in [
            (json!(1), json!(1)),
            (json!(1), json!(0)),
            (json!("new"), json!("new")),
            (json!("new"), json!(0)),
            (json!(0), json!("newer")),
        ] {
            let mut p2 = base.clone();
            let c = p2.record(Task::Classification, &p, &t).unwrap();
            assert_ne!(p2, base);
            p2.unrecord(&c).unwrap();
            assert_eq!(p2, base, "{p} / {t}");
        }
        let mut full = Performance::default();
        for i in 0..MAX_CLASSES {
            full.record(Task::Classification, &json!(i), &json!(i))
                .unwrap();
        }
        for (p, t) in [(1000, 1000), (1000, 1001), (3, 1000)] {
            let mut p2 = full.clone();
            let c = p2
                .record(Task::Classification, &json!(p), &json!(t))
                .unwrap();
            assert!(matches!(&c, Contribution::Class { actual, predicted, .. }
                if actual == "other" || predicted == "other"));
            p2.unrecord(&c).unwrap();
            assert_eq!(p2, full, "{p} / {t}");
        }
        // Taking a label out of merged counters takes it out of the pod that counted it.
        let mut a = base.clone();
        let c = a
            .record(Task::Classification, &json!(1), &json!(0))
            .unwrap();
        let b = base.clone();
        let mut merged = a.merge(&b);
        merged.unrecord(&c).unwrap();
        assert_eq!(merged, base.merge(&b));

        // Regression: exact for errors a binary fraction holds; never below zero.
        let mut r = Performance::default();
        for (p, t) in [(10.0, 12.0), (5.5, 5.0)] {
            r.record(Task::Regression, &json!(p), &json!(t)).unwrap();
        }
        let before = r.clone();
        let c = r
            .record(Task::Regression, &json!(3.25), &json!(0.0))
            .unwrap();
        assert_eq!(c, Contribution::Error(3.25));
        r.unrecord(&c).unwrap();
        assert_eq!(r, before);
        let mut one = Performance::default();
        let c = one
            .record(Task::Regression, &json!(0.1), &json!(0.3))
            .unwrap();
        one.unrecord(&c).unwrap();
        assert_eq!(
            one,
            Performance::default(),
            "nothing left, no rounding remainder"
        );
    }

    #[test]
    fn what_was_never_counted_cannot_be_unrecorded() {
        let mut p = Performance::default();
        let c = p
            .record(Task::Classification, &json!(1), &json!(1))
            .unwrap();
        let before = p.clone();
        for foreign in [
            Contribution::Class {
                actual: "1".into(),
                predicted: "zzz".into(),
                correct: false,
            },
            Contribution::Class {
                actual: "0".into(),
                predicted: "1".into(),
                correct: false,
            },
        ] {
            assert_eq!(p.unrecord(&foreign), Err(NotCounted));
            assert_eq!(p, before, "a refusal changes nothing");
        }
        p.unrecord(&c).unwrap();
        assert_eq!(p.unrecord(&c), Err(NotCounted), "not twice");
        assert_eq!(
            Performance::default().unrecord(&Contribution::Error(1.0)),
            Err(NotCounted)
        );
    }

    #[test]
    fn a_slot_a_label_taken_out_removed_does_not_make_counters_go_backwards() {
        let mut earlier = Performance::default();
        let c = earlier
            .record(Task::Classification, &json!(1), &json!(9))
            .unwrap();
        let mut later = earlier.clone();
        later
            .record(Task::Classification, &json!(1), &json!(1))
            .unwrap();
        later.unrecord(&c).unwrap();
        // Slot "9" is gone from `later` but was in `earlier`: its counts went backwards.
        assert!(later.delta(&earlier).is_none());
        // Zero counts earlier and a missing slot later: nothing happened.
        let mut zero = later.clone();
        zero.classes.insert("9".into(), ClassCounts::default());
        let d = later.delta(&zero).unwrap();
        assert_eq!(d.labelled, 0);
        assert!(!d.classes.contains_key("9"));
    }

    #[test]
    fn a_regression_label_that_would_overflow_the_sums_is_refused() {
        let mut p = Performance::default();
        assert!(matches!(
            p.record(Task::Regression, &json!(0.0), &json!(1e200)),
            Err(FeedbackError::WrongLabelType(_))
        ));
        assert_eq!(p, Performance::default());
        assert!(serde_json::to_string(&p).is_ok());
    }

    #[test]
    fn token_ids_come_from_the_mac() {
        let key = key_from_monitor_token("k");
        let a = sign(&key, &claims("r", json!(1), 1));
        let b = sign(&key, &claims("r", json!(1), 2));
        let id = token_id(&a).unwrap();
        assert_eq!(token_id(&a), Some(id), "the same token, the same id");
        assert_ne!(token_id(&b), Some(id));
        let (_, tag) = a.split_once('.').unwrap();
        let tag = URL_SAFE_NO_PAD.decode(tag).unwrap();
        assert_eq!(id.to_be_bytes(), tag[..8]);
        for junk in ["", "abc", "a.", "a.!!"] {
            assert_eq!(token_id(junk), None, "{junk}");
        }
    }

    #[test]
    fn many_classes_are_bounded() {
        let mut p = Performance::default();
        for i in 0..200 {
            p.record(Task::Classification, &json!(i), &json!(i))
                .unwrap();
        }
        assert!(p.classes.len() <= MAX_CLASSES + 1);
        assert_eq!(p.labelled, 200);
        assert_eq!(p.accuracy(), Some(1.0));
    }

    #[test]
    fn feedback_is_counted_once_per_token() {
        let key = key_from_monitor_token("k");
        let id = |nonce| token_id(&sign(&key, &claims("r", json!(1), nonce))).unwrap();
        let mut seen = SeenTokens::new(2);
        let (a, b, c) = (id(1), id(2), id(3));
        assert!(seen.first_time(a));
        assert!(!seen.first_time(a), "a retried feedback is a duplicate");
        assert!(seen.first_time(b));
        assert!(seen.first_time(c));
        assert!(seen.first_time(a), "bounded: the oldest is forgotten");
    }
}
