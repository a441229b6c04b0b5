//! The feedback log: every label a monitor counts, in a bounded ring, so the operator can tell
//! a token two pods counted (a client that retried against another pod) and subtract one.
//!
//! Each record is 32 bytes: the token's id ([`super::token_id`]), the prediction time from the
//! token, and what the label added to [`Performance`](super::Performance) — the class slots as
//! indices into the log's class table, or the regression error. Its sequence number is not
//! stored: records are consecutive, numbered from 1 per monitor process, so the ring's first
//! number and its length give each one. The ring keeps the last [`LOG_CAPACITY`] (2 MiB).
//!
//! `GET /drover/report?feedbackSince=<seq>` adds the records after `seq` still in the ring
//! ([`FeedbackLog`], schema in `docs/monitor-report.md`).

use std::borrow::Cow;
use std::collections::VecDeque;

use serde::de::Error as _;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Contribution;

/// Records a monitor keeps: at 32 bytes each, 2 MiB of the monitor's 32 MiB budget, and a
/// minute of 1,000 labels a second per pod between two scrapes.
pub const LOG_CAPACITY: usize = 65_536;

/// What one label added, compactly: class slots as indices into the log's class table.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Entry {
    /// A class label ([`Contribution::Class`]).
    Class {
        /// Index of the true class's slot.
        actual: u16,
        /// Index of the predicted class's slot.
        predicted: u16,
        /// The prediction was right.
        correct: bool,
    },
    /// A regression label: prediction − label ([`Contribution::Error`]).
    Error(f64),
}

/// One counted label.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LogRecord {
    /// The token's id ([`super::token_id`]).
    pub id: u64,
    /// When the prediction was made (Unix seconds, from the token).
    pub time: i64,
    /// What the label added.
    pub entry: Entry,
}

/// The ring a monitor keeps (allocated with its first label).
#[derive(Debug)]
pub struct FeedbackRing {
    records: VecDeque<LogRecord>,
    /// Sequence number of the next record; the first is 1.
    next_seq: u64,
    /// Class slots the records name, in the order first seen (at most
    /// [`super::MAX_CLASSES`] + 1: the slots [`super::Performance`] has).
    classes: Vec<String>,
    capacity: usize,
}

impl Default for FeedbackRing {
    fn default() -> Self {
        Self::new(LOG_CAPACITY)
    }
}

impl FeedbackRing {
    /// A ring keeping the last `capacity` records.
    pub fn new(capacity: usize) -> Self {
        Self {
            records: VecDeque::new(),
            next_seq: 1,
            classes: Vec::new(),
            capacity: capacity.max(1),
        }
    }

    /// Appends the label of token `id` made at `time`; its sequence number comes back.
    pub fn push(&mut self, id: u64, time: i64, contribution: &Contribution) -> u64 {
        let entry = match contribution {
            Contribution::Class {
                actual,
                predicted,
                correct,
            } => Entry::Class {
                actual: self.class_index(actual),
                predicted: self.class_index(predicted),
                correct: *correct,
            },
            Contribution::Error(e) => Entry::Error(*e),
        };
        if self.records.len() >= self.capacity {
            self.records.pop_front();
        }
        self.records.push_back(LogRecord { id, time, entry });
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    fn class_index(&mut self, slot: &str) -> u16 {
        match self.classes.iter().position(|c| c == slot) {
            Some(i) => u16::try_from(i).unwrap_or(u16::MAX),
            None => {
                // Performance bounds its slots (MAX_CLASSES and `other`), so this stays small.
                self.classes.push(slot.to_string());
                u16::try_from(self.classes.len() - 1).unwrap_or(u16::MAX)
            }
        }
    }

    /// Sequence number of the oldest record kept (`next_seq` when empty).
    pub fn first_seq(&self) -> u64 {
        self.next_seq - self.records.len() as u64
    }

    /// Sequence number the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The records after `seq` still kept.
    pub fn since(&self, seq: u64) -> FeedbackLog {
        let first = self.first_seq();
        let skip = seq.saturating_add(1).saturating_sub(first);
        let skip = usize::try_from(skip)
            .unwrap_or(usize::MAX)
            .min(self.records.len());
        FeedbackLog {
            first_seq: first,
            next_seq: self.next_seq,
            classes: self.classes.clone(),
            records: self.records.iter().skip(skip).copied().collect(),
        }
    }
}

/// The part of a monitor's feedback log a report carries (`feedbackLog`): the records
/// `nextSeq − records.len()` … `nextSeq − 1`, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeedbackLog {
    /// Oldest sequence number the monitor still keeps (= `nextSeq` when it keeps none).
    pub first_seq: u64,
    /// Sequence number of the next label: the monitor counted `nextSeq − 1` labels.
    pub next_seq: u64,
    /// Class slots the records' `a`/`p` indices name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
    /// The records asked for that are still kept.
    #[serde(default)]
    pub records: Vec<LogRecord>,
}

impl FeedbackLog {
    /// Sequence number of the first record carried (records are consecutive up to `nextSeq`).
    pub fn start_seq(&self) -> u64 {
        self.next_seq.saturating_sub(self.records.len() as u64)
    }

    /// What `record` added, its class slots named (`None`: an index outside the class table).
    pub fn contribution(&self, record: &LogRecord) -> Option<Contribution> {
        Some(match record.entry {
            Entry::Class {
                actual,
                predicted,
                correct,
            } => Contribution::Class {
                actual: self.classes.get(usize::from(actual))?.clone(),
                predicted: self.classes.get(usize::from(predicted))?.clone(),
                correct,
            },
            Entry::Error(e) => Contribution::Error(e),
        })
    }
}

/// Wire form: `{"id": "<16 hex digits>", "t": <unix seconds>, "a": <index>, "p": <index>,
/// "ok": <bool>}` for a class label, `{"id", "t", "e": <error>}` for a regression label. Short
/// keys: a first scrape reads up to [`LOG_CAPACITY`] of them. The id is text because 64-bit
/// integers do not survive every JSON reader.
impl Serialize for LogRecord {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(match self.entry {
            Entry::Class { .. } => 5,
            Entry::Error(_) => 3,
        }))?;
        map.serialize_entry("id", &format!("{:016x}", self.id))?;
        map.serialize_entry("t", &self.time)?;
        match self.entry {
            Entry::Class {
                actual,
                predicted,
                correct,
            } => {
                map.serialize_entry("a", &actual)?;
                map.serialize_entry("p", &predicted)?;
                map.serialize_entry("ok", &correct)?;
            }
            Entry::Error(e) => map.serialize_entry("e", &e)?,
        }
        map.end()
    }
}

#[derive(Deserialize)]
struct WireRecord<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    t: i64,
    #[serde(default)]
    a: Option<u16>,
    #[serde(default)]
    p: Option<u16>,
    #[serde(default)]
    ok: Option<bool>,
    #[serde(default)]
    e: Option<f64>,
}

impl<'de> Deserialize<'de> for LogRecord {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let w = WireRecord::deserialize(deserializer)?;
        let id = u64::from_str_radix(&w.id, 16)
            .map_err(|_| D::Error::custom("a feedback record's id is not 16 hex digits"))?;
        let entry = match (w.a, w.p, w.e) {
            (Some(actual), Some(predicted), None) => Entry::Class {
                actual,
                predicted,
                correct: w.ok.unwrap_or(false),
            },
            (None, None, Some(e)) => Entry::Error(e),
            _ => {
                return Err(D::Error::custom(
                    "a feedback record has either \"a\" and \"p\" or \"e\"",
                ));
            }
        };
        Ok(LogRecord {
            id,
            time: w.t,
            entry,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(actual: &str, predicted: &str) -> Contribution {
        Contribution::Class {
            actual: actual.into(),
            predicted: predicted.into(),
            correct: actual == predicted,
        }
    }

    #[test]
    fn a_record_is_32_bytes() {
        assert_eq!(std::mem::size_of::<LogRecord>(), 32);
    }

    #[test]
    fn since_returns_the_records_after_a_sequence_number() {
        let mut ring = FeedbackRing::new(8);
        assert_eq!(ring.since(0).records, vec![], "empty");
        assert_eq!((ring.first_seq(), ring.next_seq()), (1, 1));
        for i in 0..5u64 {
            assert_eq!(
                ring.push(100 + i, 1_000 + i as i64, &class("1", "0")),
                i + 1
            );
        }
        let all = ring.since(0);
        assert_eq!((all.first_seq, all.next_seq, all.start_seq()), (1, 6, 1));
        assert_eq!(all.records.len(), 5);
        let later = ring.since(3);
        assert_eq!(later.start_seq(), 4);
        assert_eq!(
            later.records.iter().map(|r| r.id).collect::<Vec<_>>(),
            [103, 104]
        );
        assert!(ring.since(5).records.is_empty(), "nothing new");
        assert!(
            ring.since(99).records.is_empty(),
            "a cursor ahead gets nothing"
        );
        assert_eq!(ring.since(99).next_seq, 6);
    }

    #[test]
    fn an_overflowing_ring_keeps_the_newest_and_says_where_it_starts() {
        let mut ring = FeedbackRing::new(4);
        for i in 1..=10u64 {
            ring.push(i, 0, &Contribution::Error(i as f64));
        }
        assert_eq!((ring.first_seq(), ring.next_seq()), (7, 11));
        // Asked from 2: 3..=6 are gone; what is kept comes back, and the gap shows.
        let log = ring.since(2);
        assert_eq!(log.first_seq, 7);
        assert_eq!(log.start_seq(), 7);
        assert_eq!(
            log.records.iter().map(|r| r.id).collect::<Vec<_>>(),
            [7, 8, 9, 10]
        );
        assert_eq!(ring.since(8).start_seq(), 9);
    }

    #[test]
    fn records_name_their_class_slots_and_survive_the_wire() {
        let mut ring = FeedbackRing::new(16);
        ring.push(u64::MAX, 1_800_000_000, &class("fraud", "ok"));
        ring.push(7, 1_800_000_001, &class("ok", "ok"));
        ring.push(
            8,
            1_800_000_002,
            &Contribution::Class {
                actual: "other".into(),
                predicted: "other".into(),
                correct: false,
            },
        );
        ring.push(9, 1_800_000_003, &Contribution::Error(-2.5));
        let log = ring.since(0);
        assert_eq!(log.classes, ["fraud", "ok", "other"]);
        let text = serde_json::to_string(&log).unwrap();
        assert!(
            text.contains(r#"{"id":"ffffffffffffffff","t":1800000000,"a":0,"p":1,"ok":false}"#),
            "{text}"
        );
        assert!(text.contains(r#""e":-2.5"#), "{text}");
        let back: FeedbackLog = serde_json::from_str(&text).unwrap();
        assert_eq!(back, log);
        assert_eq!(
            back.contribution(&back.records[0]),
            Some(class("fraud", "ok"))
        );
        assert_eq!(back.contribution(&back.records[1]), Some(class("ok", "ok")));
        assert_eq!(
            back.contribution(&back.records[3]),
            Some(Contribution::Error(-2.5))
        );
        // An index outside the table names nothing.
        let mut broken = back.clone();
        broken.classes.truncate(1);
        assert_eq!(broken.contribution(&broken.records[0]), None);
        for bad in [
            r#"{"id":"xyz","t":1,"e":1}"#,
            r#"{"id":"01","t":1}"#,
            r#"{"id":"01","t":1,"a":0,"p":0,"e":1}"#,
        ] {
            assert!(serde_json::from_str::<LogRecord>(bad).is_err(), "{bad}");
        }
    }
}
