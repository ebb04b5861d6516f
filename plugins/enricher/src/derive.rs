//! The configured enrichments and how one change is enriched.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::exports::floe::plugin::transform::{Change, Decision};
use crate::floe::plugin::types::{Edit, Field, Op, Value};

/// What one `process` call needs besides the config: where each source column is in the
/// call's row images, and the processed-at time of the batch.
pub struct Call {
    dates: Vec<Option<usize>>,
    bands: Vec<Option<usize>>,
    flags: Vec<Option<usize>>,
    hash: Vec<Option<usize>>,
    mask: Vec<Option<usize>>,
    now: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Enrichment {
    /// New column → timestamp (or date) column whose UTC date it holds.
    #[serde(default)]
    dates: BTreeMap<String, String>,
    #[serde(default)]
    bands: Vec<Band>,
    #[serde(default)]
    flags: Vec<Flag>,
    #[serde(default)]
    hash: Vec<Hash>,
    #[serde(default)]
    mask: Vec<Mask>,
    #[serde(default, rename = "static")]
    statics: BTreeMap<String, String>,
    processed_at: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Band {
    column: String,
    to: String,
    thresholds: Vec<f64>,
    labels: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Flag {
    column: String,
    to: String,
    min: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Hash {
    column: String,
    #[serde(default)]
    salt: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Mask {
    column: String,
    #[serde(default)]
    keep_last: usize,
}

impl Enrichment {
    pub fn from_json(text: &str) -> Result<Enrichment, String> {
        let e: Enrichment =
            serde_json::from_str(text).map_err(|err| format!("enricher config: {err}"))?;
        for b in &e.bands {
            if b.labels.len() != b.thresholds.len() + 1 {
                return Err(format!(
                    "enricher config: band `{}` needs one label more than thresholds ({} thresholds, {} labels)",
                    b.to,
                    b.thresholds.len(),
                    b.labels.len()
                ));
            }
            if b.thresholds.windows(2).any(|w| w[0] >= w[1]) {
                return Err(format!(
                    "enricher config: band `{}` thresholds must increase",
                    b.to
                ));
            }
        }
        if e.processed_at.is_some() && unix_now() == 0 {
            // Without the grant floe gives plugins a clock frozen at the epoch.
            return Err(
                "enricher config: `processed_at` needs the clock; grant it with grants = [\"clock\"]".into(),
            );
        }
        Ok(e)
    }

    pub fn added_columns(&self) -> Vec<&str> {
        let mut cols: Vec<&str> = self.dates.keys().map(String::as_str).collect();
        cols.extend(self.bands.iter().map(|b| b.to.as_str()));
        cols.extend(self.flags.iter().map(|f| f.to.as_str()));
        cols.extend(self.statics.keys().map(String::as_str));
        cols.extend(self.processed_at.as_deref());
        cols
    }

    /// The columns values are derived from (hashing and masking rewrite theirs), each once.
    pub fn source_columns(&self) -> Vec<String> {
        let mut columns: Vec<String> = Vec::new();
        let sources = self.dates.values().map(String::as_str);
        let sources = sources
            .chain(self.bands.iter().map(|b| b.column.as_str()))
            .chain(self.flags.iter().map(|f| f.column.as_str()))
            .chain(self.hash.iter().map(|h| h.column.as_str()))
            .chain(self.mask.iter().map(|m| m.column.as_str()));
        for c in sources {
            if !columns.iter().any(|x| x == c) {
                columns.push(c.to_string());
            }
        }
        columns
    }

    /// Positions of the source columns among `columns` (the call's), and the processed-at
    /// value for the batch.
    pub fn call(&self, columns: &[String]) -> Call {
        let at = |name: &str| columns.iter().position(|c| c == name);
        Call {
            dates: self.dates.values().map(|from| at(from)).collect(),
            bands: self.bands.iter().map(|b| at(&b.column)).collect(),
            flags: self.flags.iter().map(|f| at(&f.column)).collect(),
            hash: self.hash.iter().map(|h| at(&h.column)).collect(),
            mask: self.mask.iter().map(|m| at(&m.column)).collect(),
            now: self.processed_at.as_ref().map(|_| {
                let (secs, micros) = unix_now_micros();
                format!("{}.{micros:06}Z", civil(secs))
            }),
        }
    }

    pub fn decide(&self, change: &Change, call: &Call) -> Decision {
        let after = match (&change.op, &change.after) {
            (Op::Delete, _) | (_, None) => return Decision::Keep(Vec::new()),
            (_, Some(after)) => after,
        };
        let mut edits = Vec::new();
        let set = |edits: &mut Vec<Edit>, name: &str, value: Value| {
            edits.push(Edit::Set(Field {
                name: name.to_string(),
                value,
            }))
        };
        let find = |at: Option<usize>| at.and_then(|i| after.get(i)).and_then(Option::as_ref);
        for (to, at) in self.dates.keys().zip(&call.dates) {
            let v = match find(*at) {
                Some(Value::Timestamp(s) | Value::Timestamptz(s) | Value::Date(s))
                    if s.len() >= 10 =>
                {
                    Value::Date(s[..10].to_string())
                }
                // Events without a schema carry timestamps as text.
                Some(Value::Text(s)) if is_iso_date(s) => Value::Date(s[..10].to_string()),
                Some(Value::Unchanged) => Value::Unchanged,
                _ => Value::Null,
            };
            set(&mut edits, to, v);
        }
        // Bands and flags on one column (amount) parse it once.
        let mut parsed: Option<(usize, Option<f64>)> = None;
        let mut number_at = |at: Option<usize>, v: &Value| match (at, parsed) {
            (Some(i), Some((p, n))) if i == p => n,
            _ => {
                let n = number(v);
                parsed = at.map(|i| (i, n));
                n
            }
        };
        for (b, at) in self.bands.iter().zip(&call.bands) {
            let v = match find(*at) {
                Some(Value::Unchanged) => Value::Unchanged,
                Some(v) => match number_at(*at, v) {
                    Some(n) => {
                        let i = b.thresholds.iter().take_while(|t| n >= **t).count();
                        Value::Text(b.labels[i].clone())
                    }
                    None => Value::Null,
                },
                None => Value::Null,
            };
            set(&mut edits, &b.to, v);
        }
        for (f, at) in self.flags.iter().zip(&call.flags) {
            let v = match find(*at) {
                Some(Value::Unchanged) => Value::Unchanged,
                Some(v) => match number_at(*at, v) {
                    Some(n) => Value::Boolean(n >= f.min),
                    None => Value::Null,
                },
                None => Value::Null,
            };
            set(&mut edits, &f.to, v);
        }
        for (h, at) in self.hash.iter().zip(&call.hash) {
            if let Some(text) = find(*at).and_then(text_of) {
                let digest = Sha256::digest(format!("{}{text}", h.salt).as_bytes());
                set(&mut edits, &h.column, Value::Text(hex(&digest)));
            }
        }
        for (m, at) in self.mask.iter().zip(&call.mask) {
            if let Some(text) = find(*at).and_then(text_of) {
                let n = text.chars().count();
                let masked: String = text
                    .chars()
                    .enumerate()
                    .map(|(i, c)| if i + m.keep_last < n { '*' } else { c })
                    .collect();
                set(&mut edits, &m.column, Value::Text(masked));
            }
        }
        for (to, value) in &self.statics {
            set(&mut edits, to, Value::Text(value.clone()));
        }
        if let (Some(col), Some(now)) = (&self.processed_at, &call.now) {
            set(&mut edits, col, Value::Timestamptz(now.clone()));
        }
        Decision::Keep(edits)
    }
}

/// Whether `s` starts with an ISO-8601 date (`YYYY-MM-DD`).
fn is_iso_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 10
        && b[4] == b'-'
        && b[7] == b'-'
        && [0, 1, 2, 3, 5, 6, 8, 9]
            .iter()
            .all(|&i| b[i].is_ascii_digit())
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Integer(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        Value::Decimal(s) | Value::Text(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::Text(s) | Value::Decimal(s) => Some(s.clone()),
        Value::Integer(i) => Some(i.to_string()),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn unix_now() -> u64 {
    unix_now_micros().0
}

fn unix_now_micros() -> (u64, u32) {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| (d.as_secs(), d.subsec_micros()))
        .unwrap_or((0, 0))
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix time in seconds (UTC), without a date library.
fn civil(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        assert_eq!(super::civil(0), "1970-01-01T00:00:00");
        assert_eq!(super::civil(951_782_400), "2000-02-29T00:00:00");
        assert_eq!(super::civil(1_700_000_000), "2023-11-14T22:13:20");
    }
}
