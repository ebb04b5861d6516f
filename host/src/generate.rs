//! Test data on the source table (the guide's test script): inserts, updates, deletes and a
//! continuous mixed load on `transactions`, with values that exercise the pipeline: NULLs,
//! quotes, backslashes, emoji, multi-line text, JSON documents, and descriptions over 8 KB that
//! later updates leave untouched (so Debezium sends them as unchanged TOAST values).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_postgres::{Client, NoTls};
use tracing::info;

/// The statuses the validator accepts (the guide's allowed values).
pub const STATUSES: &[&str] = &["pending", "completed", "failed", "refunded", "cancelled"];
const CURRENCIES: &[&str] = &["EUR", "USD", "GBP", "JPY", "CHF"];
const METHODS: &[&str] = &["card", "bank_transfer", "paypal", "cash", "crypto"];

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub enum Workload {
    Insert {
        count: u64,
    },
    Update {
        count: u64,
    },
    Delete {
        count: u64,
    },
    /// A mix of all operations, including bursts that touch one row several times in a row.
    Load {
        ops: u64,
        rate: Option<f64>,
        seconds: Option<u64>,
    },
}

/// Counts of what was done.
#[derive(Debug, Default, Clone, Copy)]
pub struct Generated {
    pub inserts: u64,
    pub updates: u64,
    pub deletes: u64,
}

/// Connects and runs `workload` against the source table.
pub async fn run(database_url: &str, workload: Workload, seed: u64) -> anyhow::Result<Generated> {
    let (client, conn) = tokio_postgres::connect(database_url, NoTls)
        .await
        .with_context(|| "connecting to PostgreSQL (check --database-url / DATABASE_URL)")?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::warn!(error = %e, "PostgreSQL connection closed");
        }
    });
    let mut g = Generator {
        client,
        rng: StdRng::seed_from_u64(seed),
        done: Generated::default(),
        live: Vec::new(),
    };
    match workload {
        Workload::Insert { count } => {
            for _ in 0..count {
                g.insert().await?;
            }
        }
        Workload::Update { count } => {
            for id in g.random_ids(count).await? {
                g.update(id).await?;
            }
        }
        Workload::Delete { count } => {
            for id in g.random_ids(count).await? {
                g.delete(id).await?;
            }
        }
        Workload::Load { ops, rate, seconds } => g.load(ops, rate, seconds).await?,
    }
    info!(
        inserts = g.done.inserts,
        updates = g.done.updates,
        deletes = g.done.deletes,
        "generated"
    );
    Ok(g.done)
}

struct Generator {
    client: Client,
    rng: StdRng,
    done: Generated,
    /// Ids of existing rows, kept by the continuous load so it picks rows without a query.
    live: Vec<i64>,
}

impl Generator {
    fn description(&mut self) -> Option<String> {
        let r = self.rng.gen_range(0..100);
        Some(match r {
            0..=9 => return None,
            10..=19 => "O'Reilly said \"hello\" -- and left; DROP TABLE x;".to_string(),
            20..=29 => r"C:\path\to\file \n is not a newline \\ twice".to_string(),
            30..=39 => "paiement reçu ✅ 🎉 — 東京 €".to_string(),
            40..=49 => "line one\nline two\r\n\tindented line three".to_string(),
            50..=52 => self.long_text(),
            _ => format!("order #{}", self.rng.gen_range(1..1_000_000)),
        })
    }

    /// Over 8 KB of incompressible text, so PostgreSQL stores it out of line (TOAST).
    fn long_text(&mut self) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ";
        let len = self.rng.gen_range(8_500..12_000);
        (0..len)
            .map(|_| ALPHABET[self.rng.gen_range(0..ALPHABET.len())] as char)
            .collect()
    }

    fn amount(&mut self) -> Option<String> {
        if self.rng.gen_ratio(1, 20) {
            return None;
        }
        let cents: i64 = self.rng.gen_range(1..100_000_000);
        Some(format!("{}.{:02}", cents / 100, cents % 100))
    }

    /// One of `from`, or (one time in 25) NULL.
    fn pick(&mut self, from: &[&str]) -> Option<String> {
        if self.rng.gen_ratio(1, 25) {
            None
        } else {
            Some(self.pick_one(from))
        }
    }

    /// One of `from`, never NULL.
    fn pick_one(&mut self, from: &[&str]) -> String {
        from[self.rng.gen_range(0..from.len())].to_string()
    }

    fn metadata(&mut self) -> Option<serde_json::Value> {
        if self.rng.gen_ratio(1, 10) {
            return None;
        }
        Some(serde_json::json!({
            "ip": format!("10.0.{}.{}", self.rng.gen_range(0..255), self.rng.gen_range(1..255)),
            "tags": ["web", if self.rng.gen_bool(0.5) { "mobile" } else { "desktop" }],
            "risk": self.rng.gen_range(0..100),
            "note": "quote \" and backslash \\ and ünïcödé",
        }))
    }

    async fn insert(&mut self) -> anyhow::Result<i64> {
        let user_id: i32 = self.rng.gen_range(1..5_000);
        let amount = self.amount();
        let currency = self.pick(CURRENCIES);
        // The guide's rules require a status: the generated rows are valid ones.
        let status = self.pick_one(STATUSES);
        let method = self.pick(METHODS);
        let description = self.description();
        let metadata = self.metadata().map(|m| m.to_string());
        let row = self
            .client
            .query_one(
                "INSERT INTO transactions (user_id, amount, currency, status, payment_method, description, metadata) \
                 VALUES ($1, $2::text::numeric, $3, $4, $5, $6, $7::text::jsonb) RETURNING transaction_id",
                &[&user_id, &amount, &currency, &status, &method, &description, &metadata],
            )
            .await
            .context("insert")?;
        self.done.inserts += 1;
        Ok(row.get(0))
    }

    /// Updates status and amount (and, one time in ten, the description), leaving long
    /// descriptions untouched most of the time.
    async fn update(&mut self, id: i64) -> anyhow::Result<()> {
        let status = self.pick_one(STATUSES);
        let amount = self.amount();
        let n = if self.rng.gen_ratio(1, 10) {
            let description = self.description();
            self.client
                .execute(
                    "UPDATE transactions SET status = $2, amount = $3::text::numeric, description = $4, updated_at = now() WHERE transaction_id = $1",
                    &[&id, &status, &amount, &description],
                )
                .await
        } else {
            self.client
                .execute(
                    "UPDATE transactions SET status = $2, amount = $3::text::numeric, updated_at = now() WHERE transaction_id = $1",
                    &[&id, &status, &amount],
                )
                .await
        }
        .context("update")?;
        self.done.updates += n;
        Ok(())
    }

    async fn delete(&mut self, id: i64) -> anyhow::Result<()> {
        let n = self
            .client
            .execute("DELETE FROM transactions WHERE transaction_id = $1", &[&id])
            .await
            .context("delete")?;
        self.done.deletes += n;
        Ok(())
    }

    async fn random_ids(&mut self, count: u64) -> anyhow::Result<Vec<i64>> {
        let rows = self
            .client
            .query(
                "SELECT transaction_id FROM transactions ORDER BY random() LIMIT $1",
                &[&(count as i64)],
            )
            .await
            .context("choosing rows")?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// A random live row, removed from the list when `take` (it is about to be deleted).
    fn random_live(&mut self, take: bool) -> Option<i64> {
        if self.live.is_empty() {
            return None;
        }
        let i = self.rng.gen_range(0..self.live.len());
        Some(if take {
            self.live.swap_remove(i)
        } else {
            self.live[i]
        })
    }

    async fn load(
        &mut self,
        ops: u64,
        rate: Option<f64>,
        seconds: Option<u64>,
    ) -> anyhow::Result<()> {
        self.live = self
            .client
            .query("SELECT transaction_id FROM transactions", &[])
            .await
            .context("listing rows")?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let start = Instant::now();
        let stop_at = seconds.map(|s| start + Duration::from_secs(s));
        let mut done_ops = 0u64;
        while done_ops < ops && stop_at.is_none_or(|t| Instant::now() < t) {
            let r = self.rng.gen_range(0..100);
            match r {
                0..=49 => {
                    let id = self.insert().await?;
                    self.live.push(id);
                    done_ops += 1;
                }
                50..=79 => {
                    if let Some(id) = self.random_live(false) {
                        self.update(id).await?;
                    }
                    done_ops += 1;
                }
                80..=89 => {
                    if let Some(id) = self.random_live(true) {
                        self.delete(id).await?;
                    }
                    done_ops += 1;
                }
                90..=94 => {
                    // Several updates of one row in quick succession (one batch).
                    let id = self.insert().await?;
                    for _ in 0..3 {
                        self.update(id).await?;
                    }
                    self.live.push(id);
                    done_ops += 4;
                }
                _ => {
                    // Insert then delete in quick succession (one batch).
                    let id = self.insert().await?;
                    self.delete(id).await?;
                    done_ops += 2;
                }
            }
            if let Some(rate) = rate.filter(|r| *r > 0.0) {
                let due = start + Duration::from_secs_f64(done_ops as f64 / rate);
                let now = Instant::now();
                if due > now {
                    tokio::time::sleep(due - now).await;
                }
            }
        }
        Ok(())
    }
}
