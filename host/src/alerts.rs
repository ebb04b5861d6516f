//! Alerts (`[alerts]`): what floe tells an operator when it stops moving, through a webhook
//! (Slack's incoming-webhook format, or a generic JSON POST). [`Alerter`] owns the rules (when an
//! alert fires, repeats and resolves); [`spawn`] evaluates them every second from the counters
//! and sends what they produce.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::config::{AlertsConfig, WebhookFormat};
use crate::metrics::Stats;

/// What the rules look at, read once per evaluation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Signals {
    /// Summed consumer lag; negative while unknown.
    pub lag: i64,
    /// Rows loaded and messages dead-lettered so far: it moves whenever floe gets something
    /// into the warehouse or out of the way. (Not what is only read: reading ahead goes on for
    /// a while when nothing loads.)
    pub progress: u64,
    /// Why floe is not ready, but blocked tables (they have alerts of their own).
    pub unready: Vec<String>,
    /// Blocked tables and why.
    pub blocked: BTreeMap<String, String>,
}

impl Signals {
    /// Reads the counters now.
    pub fn read(stats: &Stats, lag: &AtomicI64, kafka_up: &AtomicBool) -> Signals {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let blocked = stats
            .blocked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let unready = crate::health::not_ready(stats, kafka_up)
            .into_iter()
            .filter(|r| !r.starts_with("table blocked: "))
            .collect();
        Signals {
            lag: lag.load(Ordering::Relaxed),
            progress: g(&stats.loaded) + g(&stats.dead_lettered),
            unready,
            blocked,
        }
    }
}

/// Whether an alert starts or ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Firing,
    Resolved,
}

/// One message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The alert's name: `stalled`, `lag`, `unready`, or `table_blocked:<table>`.
    pub alert: String,
    pub state: State,
    pub summary: String,
}

/// An alert that is firing.
#[derive(Debug)]
struct Firing {
    summary: String,
    sent_at: Instant,
}

/// The rules: an alert fires once its condition has held for its window, is sent again every
/// `repeat` while it holds (never more often), and resolves once when it stops holding.
#[derive(Debug)]
pub struct Alerter {
    stall: Duration,
    lag_above: Option<i64>,
    repeat: Duration,
    last_progress: Option<(u64, Instant)>,
    unready_since: Option<Instant>,
    lag_since: Option<Instant>,
    firing: BTreeMap<String, Firing>,
}

impl Alerter {
    pub fn new(cfg: &AlertsConfig) -> Self {
        Alerter {
            stall: Duration::from_secs(cfg.stall_secs.max(1)),
            lag_above: cfg.lag_above,
            repeat: Duration::from_secs(cfg.repeat_secs.max(1)),
            last_progress: None,
            unready_since: None,
            lag_since: None,
            firing: BTreeMap::new(),
        }
    }

    /// What to send after looking at `s` at `now`.
    pub fn evaluate(&mut self, now: Instant, s: &Signals) -> Vec<Notice> {
        let since = match self.last_progress {
            Some((p, at)) if p == s.progress => at,
            _ => {
                self.last_progress = Some((s.progress, now));
                now
            }
        };
        let still = now.duration_since(since);
        let mut holding: BTreeMap<String, String> = BTreeMap::new();
        if s.lag > 0 && still >= self.stall {
            holding.insert(
                "stalled".into(),
                format!(
                    "nothing loaded for {} s while {} messages wait (consumer lag)",
                    still.as_secs(),
                    s.lag
                ),
            );
        }
        // Lag above the limit for the stall window, so that a lag hovering around it does not
        // fire and resolve at every statistics report.
        self.lag_since = match (self.lag_above, self.lag_since) {
            (Some(limit), at) if s.lag > limit => at.or(Some(now)),
            _ => None,
        };
        if let (Some(limit), Some(at)) = (self.lag_above, self.lag_since) {
            if now.duration_since(at) >= self.stall {
                holding.insert(
                    "lag".into(),
                    format!("consumer lag {} is above {limit}", s.lag),
                );
            }
        }
        self.unready_since = match (s.unready.is_empty(), self.unready_since) {
            (true, _) => None,
            (false, None) => Some(now),
            (false, at) => at,
        };
        if let Some(at) = self.unready_since {
            if now.duration_since(at) >= self.stall {
                holding.insert(
                    "unready".into(),
                    format!("not ready: {}", s.unready.join("; ")),
                );
            }
        }
        for (table, reason) in &s.blocked {
            holding.insert(
                format!("table_blocked:{table}"),
                format!("table {table} is blocked: {reason}"),
            );
        }
        let mut out = Vec::new();
        let ended: Vec<String> = self
            .firing
            .keys()
            .filter(|k| !holding.contains_key(*k))
            .cloned()
            .collect();
        for alert in ended {
            if let Some(f) = self.firing.remove(&alert) {
                out.push(Notice {
                    alert,
                    state: State::Resolved,
                    summary: format!("resolved: {}", f.summary),
                });
            }
        }
        for (alert, summary) in holding {
            let due = match self.firing.get(&alert) {
                None => true,
                Some(f) => now.duration_since(f.sent_at) >= self.repeat,
            };
            if due {
                out.push(Notice {
                    alert: alert.clone(),
                    state: State::Firing,
                    summary: summary.clone(),
                });
                self.firing.insert(
                    alert,
                    Firing {
                        summary,
                        sent_at: now,
                    },
                );
            }
        }
        out
    }
}

/// The webhook's body for `notice`.
pub fn body(format: WebhookFormat, group: &str, notice: &Notice) -> serde_json::Value {
    let state = match notice.state {
        State::Firing => "firing",
        State::Resolved => "resolved",
    };
    match format {
        WebhookFormat::Slack => serde_json::json!({
            "text": format!(
                "{} floe ({group}) {}: {}",
                if notice.state == State::Firing { ":rotating_light:" } else { ":white_check_mark:" },
                notice.alert,
                notice.summary
            )
        }),
        WebhookFormat::Json => serde_json::json!({
            "source": "floe",
            "group": group,
            "alert": notice.alert,
            "state": state,
            "summary": notice.summary,
            "at_unix_ms": chrono::Utc::now().timestamp_millis(),
        }),
    }
}

/// Evaluates the rules every second and posts what they produce, until aborted. Off (`None`)
/// without `alerts.webhook_url`.
pub fn spawn(
    cfg: &AlertsConfig,
    group: &str,
    stats: Arc<Stats>,
    lag: Arc<AtomicI64>,
    kafka_up: Arc<AtomicBool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let url = cfg.webhook_url.as_ref()?.expose().to_string();
    let format = cfg.webhook_format;
    let group = group.to_string();
    let mut alerter = Alerter::new(cfg);
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "alerts are off: cannot build the HTTP client");
            return None;
        }
    };
    info!(format = ?format, stall_secs = cfg.stall_secs, "alerts on (webhook)");
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Notices not delivered yet (the receiver is down): tried again each second, the
        // oldest dropped beyond 100.
        let mut outbox: std::collections::VecDeque<Notice> = Default::default();
        loop {
            tick.tick().await;
            let signals = Signals::read(&stats, &lag, &kafka_up);
            outbox.extend(alerter.evaluate(Instant::now(), &signals));
            while outbox.len() > 100 {
                outbox.pop_front();
            }
            while let Some(notice) = outbox.front() {
                let sent = client
                    .post(&url)
                    .json(&body(format, &group, notice))
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status);
                match sent {
                    Ok(_) => {
                        info!(alert = %notice.alert, state = ?notice.state, "alert sent");
                        outbox.pop_front();
                    }
                    Err(e) => {
                        // Without the URL: it is a secret (a Slack webhook is a credential).
                        warn!(alert = %notice.alert, error = %e.without_url(), "alert not delivered; trying again");
                        break;
                    }
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alerter(lag_above: Option<i64>) -> Alerter {
        Alerter::new(&AlertsConfig {
            stall_secs: 5,
            lag_above,
            repeat_secs: 60,
            ..AlertsConfig::default()
        })
    }

    fn names(notices: &[Notice]) -> Vec<(String, State)> {
        notices.iter().map(|n| (n.alert.clone(), n.state)).collect()
    }

    #[test]
    fn a_stall_fires_after_its_window_repeats_rarely_and_resolves_once() {
        let mut a = alerter(None);
        let t0 = Instant::now();
        let mut s = Signals {
            lag: 40,
            progress: 10,
            ..Signals::default()
        };
        assert!(a.evaluate(t0, &s).is_empty());
        assert!(a.evaluate(t0 + Duration::from_secs(4), &s).is_empty());
        let fired = a.evaluate(t0 + Duration::from_secs(5), &s);
        assert_eq!(names(&fired), vec![("stalled".into(), State::Firing)]);
        assert!(fired[0].summary.contains("40 messages"), "{fired:?}");
        // Deduplicated: nothing more until the repeat window passes.
        for secs in 6..65 {
            assert!(a.evaluate(t0 + Duration::from_secs(secs), &s).is_empty());
        }
        assert_eq!(
            names(&a.evaluate(t0 + Duration::from_secs(65), &s)),
            vec![("stalled".into(), State::Firing)]
        );
        // Progress: resolved, once.
        s.progress = 11;
        assert_eq!(
            names(&a.evaluate(t0 + Duration::from_secs(66), &s)),
            vec![("stalled".into(), State::Resolved)]
        );
        assert!(a.evaluate(t0 + Duration::from_secs(67), &s).is_empty());
    }

    #[test]
    fn no_stall_without_lag_and_no_alert_while_progressing() {
        let mut a = alerter(None);
        let t0 = Instant::now();
        // Idle and caught up: nothing to load is not a stall.
        let idle = Signals::default();
        for secs in 0..30 {
            assert!(a.evaluate(t0 + Duration::from_secs(secs), &idle).is_empty());
        }
        // Lag, but progress every second.
        for secs in 30..60 {
            let s = Signals {
                lag: 1_000,
                progress: secs,
                ..Signals::default()
            };
            assert!(a.evaluate(t0 + Duration::from_secs(secs), &s).is_empty());
        }
    }

    #[test]
    fn lag_unready_and_blocked_tables_fire_and_resolve_on_their_own() {
        let mut a = alerter(Some(100));
        let t0 = Instant::now();
        let mut s = Signals {
            lag: 101,
            progress: 1,
            unready: vec!["snowflake: cannot reach Snowflake".into()],
            blocked: BTreeMap::from([(
                "\"Order Lines\"".to_string(),
                "insufficient privileges".to_string(),
            )]),
        };
        assert_eq!(
            names(&a.evaluate(t0, &s)),
            vec![("table_blocked:\"Order Lines\"".into(), State::Firing)]
        );
        s.progress = 2;
        let later = a.evaluate(t0 + Duration::from_secs(5), &s);
        assert_eq!(
            names(&later),
            vec![
                ("lag".into(), State::Firing),
                ("unready".into(), State::Firing)
            ]
        );
        assert_eq!(
            later[1].summary,
            "not ready: snowflake: cannot reach Snowflake"
        );
        s.blocked.clear();
        s.lag = 5;
        assert_eq!(
            names(&a.evaluate(t0 + Duration::from_secs(6), &s)),
            vec![
                ("lag".into(), State::Resolved),
                ("table_blocked:\"Order Lines\"".into(), State::Resolved),
            ]
        );
        s.unready.clear();
        assert_eq!(
            names(&a.evaluate(t0 + Duration::from_secs(7), &s)),
            vec![("unready".into(), State::Resolved)]
        );
    }

    #[test]
    fn webhook_bodies_name_the_alert_and_its_state() {
        let notice = Notice {
            alert: "stalled".into(),
            state: State::Firing,
            summary: "nothing loaded for 5 s".into(),
        };
        let slack = body(WebhookFormat::Slack, "floe-cdc", &notice);
        assert_eq!(
            slack["text"],
            ":rotating_light: floe (floe-cdc) stalled: nothing loaded for 5 s"
        );
        let json = body(WebhookFormat::Json, "floe-cdc", &notice);
        assert_eq!(json["alert"], "stalled");
        assert_eq!(json["state"], "firing");
        assert_eq!(json["group"], "floe-cdc");
        assert_eq!(json["summary"], "nothing loaded for 5 s");
    }
}
