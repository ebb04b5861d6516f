//! The one retry policy of the run loop: what a failure leads to, by its class
//! ([`ErrorClass`]), and how long to wait before the next attempt ([`Backoff`]). The run loop
//! asks here instead of matching classes itself.

use std::time::Duration;

use tokio::time::sleep;

use super::Shutdown;
use crate::sink::ErrorClass;

/// Longest wait between two attempts: short enough that a recovered warehouse is used again
/// within seconds, long enough not to hammer one that is down.
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// First wait before a held-back table is tried again (`on_table_error = "pause"`).
pub const FIRST_TABLE_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait before a held-back table is tried again.
const MAX_TABLE_BACKOFF: Duration = Duration::from_secs(60);
/// Refusals of the same table's rows before floe looks for the rows the warehouse refuses (a
/// refusal may be passing: a concurrent DDL, a session that changed under the load).
const REFUSALS_BEFORE_ISOLATING: u32 = 2;

/// What the run loop does after a failed step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Wait ([`Backoff`]) and try the same step again; nothing is committed meanwhile.
    Retry,
    /// The table cannot load now: its records are dead-lettered or held, the others go on.
    Block,
    /// No retry can help (credentials, configuration): floe stops, committing nothing more.
    Stop,
}

/// What the run loop does after loading a table's rows failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterLoad {
    /// Look for the rows the warehouse refuses, load the others and dead-letter those; a
    /// failure that no row explains then goes through [`after_table_step`].
    Isolate,
    Then(Next),
}

/// After loading a table's rows failed; `refusals` counts the refusals of this table's rows
/// within the batch (a refusal is counted here).
pub fn after_load(class: ErrorClass, refusals: &mut u32) -> AfterLoad {
    if class == ErrorClass::Refused {
        *refusals += 1;
    }
    match class {
        ErrorClass::Refused if *refusals >= REFUSALS_BEFORE_ISOLATING => AfterLoad::Isolate,
        ErrorClass::Transient | ErrorClass::Refused => AfterLoad::Then(Next::Retry),
        ErrorClass::Table => AfterLoad::Then(Next::Block),
        ErrorClass::Fatal => AfterLoad::Then(Next::Stop),
    }
}

/// After a step that names no row failed (a TRUNCATE, a load with no rows, a failure while
/// isolating rows that no row explains): a refusal is the table's.
pub fn after_table_step(class: ErrorClass) -> Next {
    match class {
        ErrorClass::Transient => Next::Retry,
        ErrorClass::Refused | ErrorClass::Table => Next::Block,
        ErrorClass::Fatal => Next::Stop,
    }
}

/// Whether a failure may be about the rows loaded (and so be narrowed down to some of them
/// while isolating); any other failure is the table's, the session's or the warehouse's.
pub fn may_blame_rows(class: ErrorClass) -> bool {
    class == ErrorClass::Refused
}

/// The wait before a held-back table is tried again, after `previous`.
pub fn next_table_backoff(previous: Duration) -> Duration {
    (previous * 2).min(MAX_TABLE_BACKOFF)
}

/// Exponential backoff between attempts of one failing step: 250 ms, doubling, capped.
pub struct Backoff {
    delay: Duration,
}

impl Backoff {
    pub fn new() -> Self {
        Backoff {
            delay: Duration::from_millis(250),
        }
    }

    /// The wait before the next attempt.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// Waits before the next attempt; returns true if shutdown was requested meanwhile.
    pub async fn wait(&mut self, shutdown: &Shutdown) -> bool {
        let mut s = shutdown.clone();
        if *s.borrow() {
            return true;
        }
        let stopped = tokio::select! {
            _ = sleep(self.delay) => *s.borrow(),
            _ = s.changed() => true,
        };
        self.delay = (self.delay * 2).min(MAX_BACKOFF);
        stopped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_class_leads_to_one_next_step() {
        let mut refusals = 0;
        assert_eq!(
            after_load(ErrorClass::Transient, &mut refusals),
            AfterLoad::Then(Next::Retry)
        );
        assert_eq!(
            after_load(ErrorClass::Refused, &mut refusals),
            AfterLoad::Then(Next::Retry)
        );
        // An outage in between does not count as a refusal.
        assert_eq!(
            after_load(ErrorClass::Transient, &mut refusals),
            AfterLoad::Then(Next::Retry)
        );
        assert_eq!(
            after_load(ErrorClass::Refused, &mut refusals),
            AfterLoad::Isolate
        );
        assert_eq!(refusals, 2);
        assert_eq!(
            after_load(ErrorClass::Table, &mut 0),
            AfterLoad::Then(Next::Block)
        );
        assert_eq!(
            after_load(ErrorClass::Fatal, &mut 0),
            AfterLoad::Then(Next::Stop)
        );
        // Without rows, a refusal is the table's.
        assert_eq!(after_table_step(ErrorClass::Refused), Next::Block);
        assert_eq!(after_table_step(ErrorClass::Transient), Next::Retry);
        assert_eq!(after_table_step(ErrorClass::Fatal), Next::Stop);
        assert_eq!(
            next_table_backoff(Duration::from_secs(40)),
            MAX_TABLE_BACKOFF
        );
    }

    #[tokio::test]
    async fn backoff_doubles_up_to_its_cap_and_a_stop_ends_the_wait() {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::time::pause();
        let mut b = Backoff::new();
        let mut seen = Vec::new();
        for _ in 0..7 {
            seen.push(b.delay().as_millis());
            assert!(!b.wait(&rx).await);
        }
        assert_eq!(seen, [250, 500, 1000, 2000, 4000, 8000, 8000]);
        tx.send(true).expect("send");
        assert!(b.wait(&rx).await, "a stop requested ends the wait");
    }
}
