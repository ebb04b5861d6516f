//! The rules and how a batch is checked against them.

use std::borrow::Cow;
use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

use serde::Deserialize;

use crate::exports::floe::plugin::transform::{Change, Decision};
use crate::floe::plugin::types::{Op, Value};

/// Values seen in one batch. Plugins hash a hundred short values per call: FNV-1a beats
/// SipHash's setup here, and a batch is too small to be worth flooding.
type Seen = HashSet<String, BuildHasherDefault<Fnv>>;

#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    rules: Vec<RuleConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleConfig {
    column: String,
    check: String,
    #[serde(default)]
    values: Vec<serde_json::Value>,
    min: Option<f64>,
    max: Option<f64>,
    pattern: Option<String>,
}

enum Check {
    Required,
    Integer,
    Positive,
    Numeric,
    OneOf(Vec<String>),
    Range(Option<f64>, Option<f64>),
    Regex(regex_lite::Regex, String),
    MaxLength(usize),
    UniqueInBatch,
}

struct Rule {
    column: String,
    check: Check,
}

/// The configured rules.
pub struct RuleSet {
    rules: Vec<Rule>,
}

impl RuleSet {
    pub fn from_json(text: &str) -> Result<RuleSet, String> {
        let cfg: Config =
            serde_json::from_str(text).map_err(|e| format!("validator config: {e}"))?;
        if cfg.rules.is_empty() {
            return Err("validator config: `rules` is empty; nothing would be checked".into());
        }
        let rules = cfg
            .rules
            .into_iter()
            .map(|r| {
                let check = match r.check.as_str() {
                    "required" => Check::Required,
                    "integer" => Check::Integer,
                    "positive" => Check::Positive,
                    "numeric" => Check::Numeric,
                    "one-of" if !r.values.is_empty() => Check::OneOf(
                        r.values
                            .iter()
                            .map(|v| match v {
                                serde_json::Value::String(s) => s.clone(),
                                other => other.to_string(),
                            })
                            .collect(),
                    ),
                    "one-of" => return Err(format!("rule one-of on `{}` needs `values`", r.column)),
                    "range" if r.min.is_some() || r.max.is_some() => Check::Range(r.min, r.max),
                    "range" => return Err(format!("rule range on `{}` needs `min` or `max`", r.column)),
                    "regex" => {
                        let p = r
                            .pattern
                            .ok_or_else(|| format!("rule regex on `{}` needs `pattern`", r.column))?;
                        let re = regex_lite::Regex::new(&p)
                            .map_err(|e| format!("rule regex on `{}`: {e}", r.column))?;
                        Check::Regex(re, p)
                    }
                    "max-length" => match r.max {
                        Some(m) if m >= 0.0 => Check::MaxLength(m as usize),
                        _ => return Err(format!("rule max-length on `{}` needs `max`", r.column)),
                    },
                    "unique-in-batch" => Check::UniqueInBatch,
                    other => {
                        return Err(format!(
                            "unknown check `{other}` on `{}` (known: required, integer, positive, numeric, one-of, range, regex, max-length, unique-in-batch)",
                            r.column
                        ))
                    }
                };
                Ok(Rule { column: r.column, check })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(RuleSet { rules })
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// The columns the rules read, each once.
    pub fn columns(&self) -> Vec<String> {
        let mut columns: Vec<String> = Vec::new();
        for r in &self.rules {
            if !columns.contains(&r.column) {
                columns.push(r.column.clone());
            }
        }
        columns
    }

    /// Whether a rule reads the `before` image (unique-in-batch, for deletes).
    pub fn needs_before(&self) -> bool {
        self.rules
            .iter()
            .any(|r| matches!(r.check, Check::UniqueInBatch))
    }

    /// One decision per change, in order. `key` and `columns` name the values of each key
    /// and row image.
    pub fn decide(&self, key: &[String], columns: &[String], changes: &[Change]) -> Vec<Decision> {
        // Where each rule's column is in the keys and images of this call (once per call).
        let position = |names: &[String]| -> Vec<Option<usize>> {
            self.rules
                .iter()
                .map(|r| names.iter().position(|c| *c == r.column))
                .collect()
        };
        let (at, key_at) = (position(columns), position(key));
        fn get<'v>(
            at: &[Option<usize>],
            image: &'v [Option<Value>],
            rule: usize,
        ) -> Option<&'v Value> {
            at[rule].and_then(|i| image.get(i)).and_then(Option::as_ref)
        }
        // Values of unique-in-batch columns among rows created in this batch, per rule.
        let mut seen: Vec<Seen> = self
            .rules
            .iter()
            .map(|r| match r.check {
                Check::UniqueInBatch => {
                    Seen::with_capacity_and_hasher(changes.len(), Default::default())
                }
                _ => Seen::default(),
            })
            .collect();
        changes
            .iter()
            .map(|change| {
                let after = match (&change.op, &change.after) {
                    (Op::Delete, _) | (_, None) => {
                        // A deleted row frees its values for a later insert in the batch.
                        for (i, rule) in self.rules.iter().enumerate() {
                            if let Check::UniqueInBatch = rule.check {
                                let value = match &change.before {
                                    Some(before) => get(&at, before, i),
                                    None => get(&key_at, &change.key, i),
                                };
                                if let Some(v) = value.and_then(key_text) {
                                    seen[i].remove(&*v);
                                }
                            }
                        }
                        return Decision::Keep(Vec::new());
                    }
                    (_, Some(after)) => after,
                };
                let mut failures = Vec::new();
                for (i, rule) in self.rules.iter().enumerate() {
                    if let Some(why) = check(rule, get(&at, after, i), &change.op, &mut seen[i]) {
                        failures.push(format!("{}: {why}", rule.column));
                    }
                }
                if failures.is_empty() {
                    Decision::Keep(Vec::new())
                } else {
                    Decision::Reject(failures.join("; "))
                }
            })
            .collect()
    }
}

/// Why `value` fails `rule`, if it does.
fn check(rule: &Rule, value: Option<&Value>, op: &Op, seen: &mut Seen) -> Option<String> {
    let value = match value {
        None | Some(Value::Null) => {
            return matches!(rule.check, Check::Required).then(|| "is required".to_string())
        }
        Some(Value::Unchanged) => return None,
        Some(v) => v,
    };
    match &rule.check {
        Check::Required => None,
        Check::Integer => match value {
            Value::Integer(_) => None,
            Value::Decimal(s) | Value::Text(s) if is_integer_text(s) => None,
            _ => Some("must be an integer".into()),
        },
        Check::Positive => match number(value) {
            Some(n) if n > 0.0 => None,
            _ => Some("must be positive".into()),
        },
        Check::Numeric => match number(value) {
            Some(n) if n.is_finite() => None,
            _ => Some("must be a number".into()),
        },
        Check::OneOf(allowed) => {
            let text = display(value);
            if allowed.iter().any(|a| *a == *text) {
                None
            } else {
                Some(format!("must be one of {}", allowed.join(", ")))
            }
        }
        Check::Range(min, max) => {
            let n = number(value)?;
            let below = min.is_some_and(|m| n < m);
            let above = max.is_some_and(|m| n > m);
            (below || above).then(|| match (min, max) {
                (Some(a), Some(b)) => format!("must be between {a} and {b}"),
                (Some(a), None) => format!("must be at least {a}"),
                (None, Some(b)) => format!("must be at most {b}"),
                (None, None) => String::new(),
            })
        }
        Check::Regex(re, pattern) => {
            (!re.is_match(&display(value))).then(|| format!("must match {pattern}"))
        }
        Check::MaxLength(max) => {
            let len = match value {
                Value::Bytes(b) => b.len(),
                other => display(other).chars().count(),
            };
            (len > *max).then(|| format!("longer than {max} characters"))
        }
        Check::UniqueInBatch => {
            if !matches!(op, Op::Create | Op::Read) {
                return None;
            }
            let text = key_text(value)?;
            if seen.contains(&*text) {
                Some(format!("duplicate value {text} in the batch"))
            } else {
                seen.insert(text.into_owned());
                None
            }
        }
    }
}

fn is_integer_text(s: &str) -> bool {
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    let digits = digits.split_once('.').map_or(digits, |(int, frac)| {
        if frac.bytes().all(|b| b == b'0') {
            int
        } else {
            ""
        }
    });
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Integer(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        Value::Decimal(s) | Value::Text(s) => s.trim().parse::<f64>().ok().filter(|n| !n.is_nan()),
        _ => None,
    }
}

/// A value as text, for one-of, regex and length checks.
fn display(value: &Value) -> Cow<'_, str> {
    match value {
        Value::Null | Value::Unchanged => Cow::Borrowed(""),
        Value::Boolean(b) => Cow::Owned(b.to_string()),
        Value::Integer(i) => Cow::Owned(i.to_string()),
        Value::Float(f) => Cow::Owned(f.to_string()),
        Value::Decimal(s)
        | Value::Text(s)
        | Value::Date(s)
        | Value::Time(s)
        | Value::Timestamp(s)
        | Value::Timestamptz(s)
        | Value::Json(s) => Cow::Borrowed(s),
        Value::Bytes(b) => String::from_utf8_lossy(b),
    }
}

fn key_text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::Null | Value::Unchanged => None,
        other => Some(display(other)),
    }
}
