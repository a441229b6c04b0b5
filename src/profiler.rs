//! `drover profile`: a reference profile from a model's training (or held-out) data, a CSV file
//! with a header row or JSON lines. Numeric columns get quantile bins with counts, mean and
//! standard deviation; text columns their most frequent categories plus "other"; the
//! prediction column (if named) becomes the profile's prediction distribution; the target
//! column is left out. The counts are made by the same histogram code the monitor records with,
//! so live traffic lands in the same bins.
//!
//! Bad input is refused with the line: ragged rows, a non-numeric value in a column that is
//! otherwise numeric, a non-finite number, empty input.

use std::collections::BTreeMap;

use crate::profile::{PROFILE_VERSION, ProfiledColumn, ReferenceProfile};
use crate::stats::{BinLayout, FeatureHistogram};

/// Most categories kept per text column (the rest count as "other").
pub const MAX_CATEGORIES: usize = 20;

/// Share of numeric values from which a column is numeric (a few stray texts are then errors,
/// not a reason to treat prices as categories).
const NUMERIC_SHARE: f64 = 0.95;

/// What to build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileOptions {
    /// The label column, left out.
    pub target: Option<String>,
    /// The model's prediction column.
    pub prediction: Option<String>,
    /// Bins per numeric column.
    pub bins: usize,
    /// The model version the data belongs to.
    pub model_version: Option<String>,
}

/// Why a profile cannot be built.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProfileBuildError {
    /// Nothing to profile.
    #[error("the input has no data rows")]
    Empty,
    /// A problem on one line (1-based, the header being line 1 in a CSV file).
    #[error("line {line}: {what}")]
    Line {
        /// Line number.
        line: usize,
        /// What is wrong.
        what: String,
    },
    /// A named column does not exist.
    #[error("column {0:?} (named by --{1}) is not in the input")]
    MissingColumn(String, &'static str),
}

/// One value.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    /// Empty or null.
    Missing,
    /// A number.
    Number(f64),
    /// Anything else.
    Text(String),
}

/// The rows of a table: column names, and per data row its line number and cells.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// `(line, cells)` per data row.
    pub rows: Vec<(usize, Vec<Cell>)>,
}

fn cell_of_text(s: &str) -> Cell {
    let t = s.trim();
    if t.is_empty() {
        Cell::Missing
    } else if let Ok(n) = t.parse::<f64>() {
        Cell::Number(n)
    } else {
        Cell::Text(t.to_string())
    }
}

/// Reads CSV text with a header row; every row must have the header's number of fields.
pub fn read_csv(text: &str) -> Result<Table, ProfileBuildError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(text.as_bytes());
    let columns: Vec<String> = reader
        .headers()
        .map_err(|e| ProfileBuildError::Line {
            line: 1,
            what: e.to_string(),
        })?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| ProfileBuildError::Line {
            line: e
                .position()
                .map(|p| p.line() as usize)
                .unwrap_or(rows.len() + 2),
            what: match e.kind() {
                csv::ErrorKind::UnequalLengths {
                    expected_len, len, ..
                } => format!("{len} fields, the header has {expected_len}"),
                _ => e.to_string(),
            },
        })?;
        let line = record
            .position()
            .map(|p| p.line() as usize)
            .unwrap_or(rows.len() + 2);
        rows.push((line, record.iter().map(cell_of_text).collect()));
    }
    Ok(Table { columns, rows })
}

/// Reads JSON lines: one object per line; columns are the keys in order of first appearance.
pub fn read_json_lines(text: &str) -> Result<Table, ProfileBuildError> {
    let mut columns: Vec<String> = Vec::new();
    let mut objects = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(raw).map_err(|e| ProfileBuildError::Line {
                line,
                what: format!("not JSON: {e}"),
            })?;
        let serde_json::Value::Object(map) = value else {
            return Err(ProfileBuildError::Line {
                line,
                what: "not a JSON object".into(),
            });
        };
        for k in map.keys() {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
        objects.push((line, map));
    }
    let rows = objects
        .into_iter()
        .map(|(line, map)| {
            let cells = columns
                .iter()
                .map(|c| match map.get(c) {
                    None | Some(serde_json::Value::Null) => Cell::Missing,
                    Some(serde_json::Value::Number(n)) => {
                        n.as_f64().map(Cell::Number).unwrap_or(Cell::Missing)
                    }
                    Some(serde_json::Value::String(s)) => Cell::Text(s.clone()),
                    Some(other) => Cell::Text(other.to_string()),
                })
                .collect();
            (line, cells)
        })
        .collect();
    Ok(Table { columns, rows })
}

fn profile_column(
    table: &Table,
    index: usize,
    name: &str,
    bins: usize,
) -> Result<Option<ProfiledColumn>, ProfileBuildError> {
    let cells = table
        .rows
        .iter()
        .map(|(line, cells)| (*line, cells.get(index).unwrap_or(&Cell::Missing)));
    let (mut numbers, mut texts) = (0usize, 0usize);
    for (_, c) in cells.clone() {
        match c {
            Cell::Number(_) => numbers += 1,
            Cell::Text(_) => texts += 1,
            Cell::Missing => {}
        }
    }
    if numbers + texts == 0 {
        return Ok(None);
    }
    let numeric = numbers as f64 / (numbers + texts) as f64 >= NUMERIC_SHARE;
    if numeric {
        let mut values = Vec::with_capacity(numbers);
        for (line, c) in cells {
            match c {
                Cell::Number(n) if n.is_finite() => values.push(*n),
                Cell::Number(n) => {
                    return Err(ProfileBuildError::Line {
                        line,
                        what: format!("column {name:?} has the non-finite value {n}"),
                    });
                }
                Cell::Text(t) => {
                    return Err(ProfileBuildError::Line {
                        line,
                        what: format!(
                            "column {name:?} is numeric ({:.0}% of its values) but has {t:?}",
                            100.0 * numbers as f64 / (numbers + texts) as f64
                        ),
                    });
                }
                Cell::Missing => {}
            }
        }
        let layout = BinLayout::learn_numeric(&values, bins.max(2));
        let mut h = FeatureHistogram::new(layout).map_err(|e| ProfileBuildError::Line {
            line: 1,
            what: format!("column {name:?}: {e}"),
        })?;
        for v in &values {
            h.observe_number(*v);
        }
        return Ok(Some(column_of(name, &h, true)));
    }
    let mut frequency: BTreeMap<String, u64> = BTreeMap::new();
    let mut all = Vec::new();
    for (_, c) in cells {
        let text = match c {
            Cell::Number(n) => n.to_string(),
            Cell::Text(t) => t.clone(),
            Cell::Missing => continue,
        };
        *frequency.entry(text.clone()).or_default() += 1;
        all.push(text);
    }
    let mut ranked: Vec<(String, u64)> = frequency.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let categories: Vec<String> = ranked
        .into_iter()
        .take(MAX_CATEGORIES)
        .map(|(c, _)| c)
        .collect();
    let layout = BinLayout::categorical(categories).map_err(|e| ProfileBuildError::Line {
        line: 1,
        what: format!("column {name:?}: {e}"),
    })?;
    let mut h = FeatureHistogram::new(layout).map_err(|e| ProfileBuildError::Line {
        line: 1,
        what: format!("column {name:?}: {e}"),
    })?;
    for t in &all {
        h.observe_category(t);
    }
    Ok(Some(column_of(name, &h, false)))
}

fn column_of(name: &str, h: &FeatureHistogram, numeric: bool) -> ProfiledColumn {
    ProfiledColumn {
        name: name.to_string(),
        layout: h.layout().clone(),
        counts: h.counts().to_vec(),
        count: h.count(),
        mean: if numeric { h.mean() } else { None },
        std: if numeric { h.std_dev() } else { None },
    }
}

/// Builds the profile of `table`.
pub fn build(
    table: &Table,
    options: &ProfileOptions,
) -> Result<ReferenceProfile, ProfileBuildError> {
    if table.rows.is_empty() {
        return Err(ProfileBuildError::Empty);
    }
    let index_of = |c: &Option<String>, flag: &'static str| -> Result<Option<usize>, _> {
        match c {
            None => Ok(None),
            Some(c) => table
                .columns
                .iter()
                .position(|x| x == c)
                .map(Some)
                .ok_or_else(|| ProfileBuildError::MissingColumn(c.clone(), flag)),
        }
    };
    let target = index_of(&options.target, "target")?;
    let prediction = index_of(&options.prediction, "prediction")?;
    let mut features = Vec::new();
    for (i, name) in table.columns.iter().enumerate() {
        if Some(i) == target || Some(i) == prediction {
            continue;
        }
        if let Some(c) = profile_column(table, i, name, options.bins)? {
            features.push(c);
        }
    }
    let prediction = match prediction {
        Some(i) => profile_column(table, i, "prediction", options.bins)?,
        None => None,
    };
    let profile = ReferenceProfile {
        version: PROFILE_VERSION,
        model_version: options.model_version.clone(),
        features,
        prediction,
        confidence: None,
    };
    profile.check().map_err(|e| ProfileBuildError::Line {
        line: 1,
        what: e.to_string(),
    })?;
    Ok(profile)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> ProfileOptions {
        ProfileOptions {
            target: Some("is_fraud".into()),
            prediction: None,
            bins: 10,
            model_version: Some("1.0.0".into()),
        }
    }

    #[test]
    fn numeric_and_text_columns_are_profiled_and_the_target_left_out() {
        let mut csv = String::from("amount,channel,is_fraud\n");
        for i in 0..1000 {
            csv.push_str(&format!(
                "{},{},{}\n",
                i as f64 * 1.5,
                ["online", "pos", "atm"][i % 3],
                i % 2
            ));
        }
        let p = build(&read_csv(&csv).unwrap(), &options()).unwrap();
        assert_eq!(p.model_version.as_deref(), Some("1.0.0"));
        let names: Vec<&str> = p.features.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, vec!["amount", "channel"]);
        let amount = &p.features[0];
        assert!(amount.layout.is_numeric());
        assert_eq!(amount.count, 1000);
        assert_eq!(amount.counts.len(), amount.layout.bin_count());
        assert!(
            amount.counts.iter().all(|c| (90..=110).contains(c)),
            "{:?}",
            amount.counts
        );
        assert!((amount.mean.unwrap() - 749.25).abs() < 1e-9);
        let channel = &p.features[1];
        assert!(!channel.layout.is_numeric());
        assert_eq!(channel.count, 1000);
        // Round trip through the reader the operator and the monitor use.
        let json = serde_json::to_vec(&p).unwrap();
        assert_eq!(ReferenceProfile::from_json(&json).unwrap(), p);
    }

    #[test]
    fn bad_files_are_refused_with_the_line() {
        let plain = ProfileOptions {
            target: None,
            ..options()
        };
        let ragged = "a,b\n1,2\n3\n";
        let err = read_csv(ragged).unwrap_err();
        assert_eq!(err.to_string(), "line 3: 1 fields, the header has 2");
        let mut stray = String::from("amount\n");
        for i in 0..100 {
            stray.push_str(&format!("{i}\n"));
        }
        stray.push_str("lots\n");
        let err = build(&read_csv(&stray).unwrap(), &plain).unwrap_err();
        assert!(
            matches!(&err, ProfileBuildError::Line { line: 102, what } if what.contains("\"amount\"") && what.contains("\"lots\"")),
            "{err}"
        );
        assert_eq!(
            build(&read_csv("a,b\n").unwrap(), &plain).unwrap_err(),
            ProfileBuildError::Empty
        );
        let err = read_json_lines("{\"a\": 1}\n[1]\n").unwrap_err();
        assert_eq!(err.to_string(), "line 2: not a JSON object");
        let err = build(
            &read_csv("a\n1\n").unwrap(),
            &ProfileOptions {
                prediction: Some("pred".into()),
                ..plain.clone()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("--prediction"), "{err}");
    }

    #[test]
    fn json_lines_with_a_prediction_column() {
        let mut text = String::new();
        for i in 0..200 {
            text.push_str(&format!(
                "{{\"x\": {i}, \"kind\": \"k{}\", \"pred\": {}}}\n",
                i % 4,
                i % 2
            ));
        }
        let p = build(
            &read_json_lines(&text).unwrap(),
            &ProfileOptions {
                target: None,
                prediction: Some("pred".into()),
                bins: 5,
                model_version: None,
            },
        )
        .unwrap();
        assert_eq!(p.features.len(), 2);
        let pred = p.prediction.unwrap();
        assert_eq!(pred.name, "prediction");
        assert_eq!(pred.count, 200);
    }
}
