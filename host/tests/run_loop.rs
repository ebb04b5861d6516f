//! The run loop against in-memory parts: a source with a real ledger, a warehouse that can
//! go down, refuse a value or refuse a whole table, and a dead-letter queue. Each test plays
//! one failure and checks what was loaded, dead-lettered and committed, and that the
//! warehouse ends equal to the source. Keys are integers in one table and text in another,
//! messages come from several partitions, and the warehouse's round trip varies.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;

use floe::config::Config;
use floe::dlq::MemoryDeadLetters;
use floe::metrics::Stats;
use floe::pipeline::Pipeline;
use floe::sink::memory::{memory_sink, MemoryWarehouse};
use floe::source::memory::{memory_source, MemorySource, MemoryTopics};

const TOPIC: &str = "cdc.shop.changes";
/// A second topic (partition 0 only) for the table that is broken on purpose.
const OTHER_TOPIC: &str = "cdc.shop.other";

/// The test config: batches of `max_records` / `max_wait_ms`, `snowflake` keys and any
/// further sections.
fn config(max_records: usize, max_wait_ms: u64, snowflake: &str, extra: &str) -> Config {
    let text = config_text(max_records, max_wait_ms, snowflake, extra);
    Config::from_toml(&text, std::iter::empty()).expect("test config")
}

fn config_text(max_records: usize, max_wait_ms: u64, snowflake: &str, extra: &str) -> String {
    format!(
        r#"
[kafka]
brokers = "127.0.0.1:1"
group_id = "run-loop-test"
topics = ["{TOPIC}", "{OTHER_TOPIC}"]

[snowflake]
account = "local"
user = "u"
password = "p"
endpoint = "http://127.0.0.1:1"
{snowflake}

[batch]
max_records = {max_records}
max_wait_ms = {max_wait_ms}
{extra}
"#
    )
}

/// Source positions grow across every test's messages.
static LSN: AtomicI64 = AtomicI64::new(1_000);

/// A Debezium change event (schemaless JSON): its key and value.
fn event(
    table: &str,
    key_column: &str,
    key: &Value,
    op: &str,
    amount: i64,
    note: &str,
) -> (Vec<u8>, Vec<u8>) {
    let lsn = LSN.fetch_add(8, Ordering::Relaxed);
    let row = json!({ key_column: key, "amount": amount, "note": note });
    let (before, after) = match op {
        "d" => (json!({ key_column: key }), Value::Null),
        _ => (Value::Null, row),
    };
    let value = json!({
        "before": before, "after": after, "op": op,
        "source": { "schema": "shop", "table": table, "lsn": lsn, "ts_ms": 1_700_000_000_000i64 },
    });
    (
        json!({ key_column: key }).to_string().into_bytes(),
        value.to_string().into_bytes(),
    )
}

/// What the test expects of one table: per key (as the sink writes it), the source position
/// of its last change, or none if that change deleted it.
#[derive(Default)]
struct Expected(BTreeMap<String, Option<(i32, i64)>>);

impl Expected {
    fn live(&self) -> BTreeMap<String, (i32, i64)> {
        self.0
            .iter()
            .filter_map(|(k, v)| v.map(|v| (k.clone(), v)))
            .collect()
    }
}

/// Pushes a change and notes what the warehouse should end with.
#[allow(clippy::too_many_arguments)]
fn push(
    topics: &MemoryTopics,
    expected: &mut Expected,
    topic: &str,
    partition: i32,
    table: &str,
    key_column: &str,
    key: Value,
    op: &str,
    amount: i64,
) -> i64 {
    let (k, v) = event(table, key_column, &key, op, amount, &format!("n{amount}"));
    let offset = topics.push(topic, partition, Some(&k), Some(&v));
    let live = (op != "d").then_some((partition, offset));
    expected.0.insert(key.to_string(), live);
    offset
}

/// A mixed workload: `orders` (integer keys) on partition 0 and `Order Lines` (text keys, a
/// name with a space and upper case) on partition 1, with updates and deletes.
fn workload(topics: &MemoryTopics, n: i64) -> (Expected, Expected) {
    let (mut orders, mut lines) = (Expected::default(), Expected::default());
    for i in 0..n {
        push(
            topics,
            &mut orders,
            TOPIC,
            0,
            "orders",
            "id",
            json!(i),
            "c",
            i,
        );
        let key = json!(format!("line-{i:03}-ü"));
        push(
            topics,
            &mut lines,
            TOPIC,
            1,
            "Order Lines",
            "line_id",
            key.clone(),
            "c",
            i,
        );
        if i % 3 == 0 {
            push(
                topics,
                &mut orders,
                TOPIC,
                0,
                "orders",
                "id",
                json!(i),
                "u",
                i + 1000,
            );
        }
        if i % 5 == 0 {
            push(
                topics,
                &mut lines,
                TOPIC,
                1,
                "Order Lines",
                "line_id",
                key,
                "d",
                0,
            );
        }
    }
    (orders, lines)
}

/// The test's handles on a running pipeline.
#[derive(Clone)]
struct Rig {
    topics: MemoryTopics,
    warehouse: MemoryWarehouse,
    dlq: MemoryDeadLetters,
    stats: Arc<Stats>,
    stop: Arc<watch::Sender<bool>>,
}

impl Rig {
    /// Waits (at most 30 s) until `cond` holds.
    async fn until(&self, what: &str, cond: impl Fn(&Rig) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !cond(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting until {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn committed(&self, topic: &str, partition: i32) -> i64 {
        self.topics.committed(topic, partition).unwrap_or(0)
    }

    /// Waits until these partitions are committed up to their last message pushed so far.
    async fn until_committed(&self, what: &str, partitions: &[(&str, i32)]) {
        let ends: Vec<i64> = partitions
            .iter()
            .map(|(t, p)| self.topics.end(t, *p))
            .collect();
        self.until(what, |r| {
            partitions
                .iter()
                .zip(&ends)
                .all(|((t, p), end)| r.committed(t, *p) == *end)
        })
        .await;
    }
}

/// Runs a pipeline over `source` while `script` plays the test, then stops it; returns how the
/// run ended.
async fn run<F, Fut>(
    cfg: Config,
    config_path: Option<&Path>,
    (source, topics): (MemorySource, MemoryTopics),
    warehouse: (floe::sink::memory::MemorySink, MemoryWarehouse),
    script: F,
) -> anyhow::Result<()>
where
    F: FnOnce(Rig) -> Fut,
    Fut: Future<Output = ()>,
{
    let dlq = MemoryDeadLetters::default();
    let (sink, warehouse) = warehouse;
    let pipeline = Pipeline::with_parts(
        cfg,
        config_path.map(Path::to_path_buf),
        source,
        sink,
        dlq.clone(),
    )
    .expect("pipeline");
    let (stop, stopped) = watch::channel(false);
    let rig = Rig {
        topics,
        warehouse,
        dlq,
        stats: pipeline.stats(),
        stop: Arc::new(stop),
    };
    let stop = rig.stop.clone();
    let (result, ()) = tokio::join!(pipeline.run(stopped, None), async move {
        script(rig).await;
        let _ = stop.send(true);
    });
    result
}

fn stat(counter: &std::sync::atomic::AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_commits_nothing_and_everything_loads_once_it_ends() {
    let (source, topics) = memory_source();
    let (sink, warehouse) = memory_sink();
    warehouse.outage(true);
    let (orders, lines) = workload(&topics, 40);
    run(
        config(100, 200, "", ""),
        None,
        (source, topics),
        (sink, warehouse),
        |rig| async move {
            // The first batch was tried several times (with backoff).
            rig.until("the loads were retried", |r| r.warehouse.statements() >= 3)
                .await;
            assert!(rig.warehouse.loaded().is_empty());
            assert_eq!(
                rig.committed(TOPIC, 0),
                0,
                "nothing may be committed in an outage"
            );
            assert_eq!(rig.committed(TOPIC, 1), 0);
            assert!(stat(&rig.stats.errors) >= 2);
            let kafka_up = AtomicBool::new(true);
            let why = floe::health::not_ready(&rig.stats, &kafka_up);
            assert!(
                why.len() == 1 && why[0].starts_with("snowflake: "),
                "/readyz names the outage: {why:?}"
            );
            rig.warehouse.outage(false);
            rig.until_committed("everything is committed", &[(TOPIC, 0), (TOPIC, 1)])
                .await;
            assert_eq!(rig.warehouse.rows("ORDERS"), orders.live());
            assert_eq!(rig.warehouse.rows("ORDER LINES"), lines.live());
            assert!(rig.dlq.sent().is_empty(), "an outage dead-letters nothing");
            assert!(floe::health::not_ready(&rig.stats, &kafka_up).is_empty());
        },
    )
    .await
    .expect("run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_value_is_isolated_and_dead_lettered_while_the_rest_loads() {
    let (source, topics) = memory_source();
    let (sink, warehouse) = memory_sink();
    // One text key and one integer key Snowflake refuses, in one batch with good rows.
    warehouse.poison("\"line-013-ü\"");
    warehouse.poison("28");
    let (mut orders, mut lines) = workload(&topics, 40);
    // The refused rows never reach the warehouse; everything else does.
    lines.0.remove("\"line-013-ü\"");
    orders.0.remove("28");
    run(
        config(100, 200, "", ""),
        None,
        (source, topics),
        (sink, warehouse),
        |rig| async move {
            rig.until_committed("everything is committed", &[(TOPIC, 0), (TOPIC, 1)])
                .await;
            assert_eq!(rig.warehouse.rows("ORDERS"), orders.live());
            assert_eq!(rig.warehouse.rows("ORDER LINES"), lines.live());
            // Exactly the refused rows' messages, with Snowflake's reason: the line's create and
            // the order's create (28 is not a multiple of 3: no update).
            let mut sent: Vec<(i32, String)> = rig
                .dlq
                .sent()
                .into_iter()
                .map(|d| {
                    assert_eq!(d.stage, "load");
                    assert!(d.reason.contains("is not recognized"), "{}", d.reason);
                    (d.partition, d.reason)
                })
                .collect();
            sent.sort();
            assert_eq!(sent.len(), 2, "{sent:?}");
            assert_eq!((sent[0].0, sent[1].0), (0, 1));
            assert_eq!(stat(&rig.stats.dead_lettered), 2);
        },
    )
    .await
    .expect("run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_row_is_blamed_when_the_load_without_rows_is_refused_too() {
    let (source, topics) = memory_source();
    let (sink, warehouse) = memory_sink();
    // Every load of `Order Lines` is refused with a row's error code, even with no rows.
    warehouse.refuse_table("ORDER LINES");
    let (orders, lines) = workload(&topics, 12);
    run(
        config(100, 200, "", ""),
        None,
        (source, topics),
        (sink, warehouse),
        |rig| async move {
            rig.until_committed("everything is committed", &[(TOPIC, 0), (TOPIC, 1)])
                .await;
            assert_eq!(rig.warehouse.rows("ORDERS"), orders.live());
            assert!(rig.warehouse.rows("ORDER LINES").is_empty());
            // The table is blocked (on_table_error = dead-letter): each of its messages is
            // dead-lettered once, as the table's, and none is blamed as a refused row.
            let sent = rig.dlq.sent();
            assert_eq!(sent.len() as i64, rig.topics.end(TOPIC, 1), "{sent:?}");
            for d in &sent {
                assert_eq!(d.partition, 1);
                assert!(
                    d.reason.starts_with("table ORDER LINES cannot be loaded"),
                    "{}",
                    d.reason
                );
            }
            assert_eq!(lines.0.len(), 12);
        },
    )
    .await
    .expect("run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_in_the_middle_of_a_retry_commits_nothing_and_a_restart_loads_it_all() {
    let (source, topics) = memory_source();
    let (sink, warehouse) = memory_sink();
    // A slow warehouse that is down: the stop arrives while a load is being retried.
    warehouse.latency(Duration::from_millis(300));
    warehouse.outage(true);
    let (orders, lines) = workload(&topics, 30);
    let handle = topics.clone();
    let wh = warehouse.clone();
    run(
        config(100, 200, "", ""),
        None,
        (source, topics),
        (sink, warehouse),
        |rig| async move {
            // Two tables: two statements per attempt; four is a retry under way.
            rig.until("a load was retried", |r| r.warehouse.statements() >= 4)
                .await;
        },
    )
    .await
    .expect("a stop during a retry is a clean exit");
    assert!(wh.loaded().is_empty());
    // At most offset 0 (nothing) is committed.
    assert_eq!(handle.committed(TOPIC, 0).unwrap_or(0), 0);
    assert_eq!(handle.committed(TOPIC, 1).unwrap_or(0), 0);

    // The restarted process reads everything again and loads it.
    wh.outage(false);
    let source = handle.restart();
    run(
        config(100, 200, "", ""),
        None,
        (source, handle.clone()),
        (wh.session(), wh.clone()),
        |rig| async move {
            rig.until_committed("everything is committed", &[(TOPIC, 0), (TOPIC, 1)])
                .await;
            assert_eq!(rig.warehouse.rows("ORDERS"), orders.live());
            assert_eq!(rig.warehouse.rows("ORDER LINES"), lines.live());
        },
    )
    .await
    .expect("run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_in_the_middle_of_a_batch_drops_the_revoked_changes_and_commits_only_owned_partitions(
) {
    let (source, topics) = memory_source();
    let (sink, warehouse) = memory_sink();
    warehouse.latency(Duration::from_millis(50));
    let (orders, lines) = workload(&topics, 20);
    // A long wait: the batch is still open when the rebalance comes.
    let cfg = config(1000, 3_000, "", "");
    run(
        cfg,
        None,
        (source, topics),
        (sink, warehouse),
        |rig| async move {
            rig.until("every change is in the open batch", |r| {
                r.topics.unread() == 0
                    && stat(&r.stats.consumed) as i64
                        == r.topics.end(TOPIC, 0) + r.topics.end(TOPIC, 1)
            })
            .await;
            assert!(rig.warehouse.loaded().is_empty(), "the batch is still open");
            // Partition 1 goes to another process.
            rig.topics.revoke(&[(TOPIC, 1)]).await;
            rig.until_committed("partition 0 is committed", &[(TOPIC, 0)])
                .await;
            assert_eq!(rig.warehouse.rows("ORDERS"), orders.live());
            assert!(
                rig.warehouse.rows("ORDER LINES").is_empty(),
                "a revoked partition's changes are dropped, not loaded"
            );
            assert_eq!(
                rig.committed(TOPIC, 1),
                0,
                "nothing is committed for a revoked partition"
            );
            // Another batch on partition 0 after the rebalance: still nothing of partition 1.
            let mut more = Expected::default();
            push(
                &rig.topics,
                &mut more,
                TOPIC,
                0,
                "orders",
                "id",
                json!(500),
                "c",
                5,
            );
            rig.until_committed("the new change is committed", &[(TOPIC, 0)])
                .await;
            assert_eq!(rig.committed(TOPIC, 1), 0);
            // Partition 1 comes back: read again from its committed offset, and loaded.
            rig.topics.assign(&[(TOPIC, 1)]);
            rig.until_committed("partition 1 is committed", &[(TOPIC, 1)])
                .await;
            assert_eq!(rig.warehouse.rows("ORDER LINES"), lines.live());
            // Each line's row (deleted ones too) was loaded once: the revoked copies never reached
            // the warehouse.
            let line_loads = rig
                .warehouse
                .loaded()
                .iter()
                .filter(|(t, _, _)| t == "ORDER LINES")
                .count();
            assert_eq!(line_loads, lines.0.len());
        },
    )
    .await
    .expect("run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_batch_is_read_while_one_loads_and_nothing_is_committed_before_its_load() {
    let (source, topics) = memory_source();
    let (sink, warehouse) = memory_sink();
    // Every statement waits at the gate until the test opens it.
    warehouse.gate(true);
    let (orders, lines) = workload(&topics, 60);
    let total = topics.end(TOPIC, 0) + topics.end(TOPIC, 1);
    assert!(
        total > 100 && total < 200,
        "{total} messages: a batch and part of the next"
    );
    run(
        config(100, 200, "", ""),
        None,
        (source, topics),
        (sink, warehouse),
        |rig| async move {
            rig.until("the first batch waits at the gate", |r| {
                r.warehouse.waiting() >= 1
            })
            .await;
            // While it waits, the rest is read, decoded and batched.
            rig.until("everything is read while the first batch loads", |r| {
                r.topics.unread() == 0 && stat(&r.stats.decoded) as i64 == total
            })
            .await;
            assert!(rig.warehouse.loaded().is_empty());
            assert_eq!(
                rig.committed(TOPIC, 0),
                0,
                "nothing is committed before its load"
            );
            assert_eq!(rig.committed(TOPIC, 1), 0);
            rig.warehouse.gate(false);
            rig.until_committed("everything is committed", &[(TOPIC, 0), (TOPIC, 1)])
                .await;
            assert_eq!(rig.warehouse.rows("ORDERS"), orders.live());
            assert_eq!(rig.warehouse.rows("ORDER LINES"), lines.live());
            // Two batches, each message loaded once.
            let mut loaded = rig.warehouse.loaded();
            let n = loaded.len();
            loaded.sort();
            loaded.dedup();
            assert_eq!(loaded.len(), n, "a row loaded twice");
            assert_eq!(stat(&rig.stats.batches), 2);
        },
    )
    .await
    .expect("run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_while_a_batch_loads_drops_the_revoked_changes_read_ahead() {
    let (source, topics) = memory_source();
    let (sink, warehouse) = memory_sink();
    warehouse.latency(Duration::from_millis(50));
    warehouse.gate(true);
    let (mut orders, mut lines) = (Expected::default(), Expected::default());
    // The first batch (40) holds orders only (partition 0); the lines (partition 1, text keys)
    // and more orders come after it, so they are read ahead while it loads.
    for i in 0..40 {
        push(
            &topics,
            &mut orders,
            TOPIC,
            0,
            "orders",
            "id",
            json!(i),
            "c",
            i,
        );
    }
    for i in 0..20 {
        let key = json!(format!("line-{i:03}-ü"));
        push(
            &topics,
            &mut lines,
            TOPIC,
            1,
            "Order Lines",
            "line_id",
            key,
            "c",
            i,
        );
        push(
            &topics,
            &mut orders,
            TOPIC,
            0,
            "orders",
            "id",
            json!(i),
            "u",
            i + 100,
        );
    }
    run(
        config(40, 200, "", ""),
        None,
        (source, topics),
        (sink, warehouse),
        |rig| async move {
            rig.until("the first batch waits and the next is read", |r| {
                r.warehouse.waiting() >= 1 && r.topics.unread() == 0
            })
            .await;
            // Partition 1 goes to another process while the first batch loads (a revocation
            // that gave up waiting for the load); the next message read tells the pipeline.
            rig.topics.revoke_now(&[(TOPIC, 1)]);
            push(
                &rig.topics,
                &mut orders,
                TOPIC,
                0,
                "orders",
                "id",
                json!(-7),
                "c",
                7,
            );
            rig.until("the message after the rebalance is read", |r| {
                r.topics.unread() == 0
            })
            .await;
            rig.warehouse.gate(false);
            rig.until_committed("partition 0 is committed", &[(TOPIC, 0)])
                .await;
            assert_eq!(rig.warehouse.rows("ORDERS"), orders.live());
            assert!(
                rig.warehouse.rows("ORDER LINES").is_empty(),
                "the revoked partition's changes read ahead are dropped, not loaded"
            );
            assert_eq!(
                rig.committed(TOPIC, 1),
                0,
                "nothing is committed for a revoked partition"
            );
            assert!(rig.dlq.sent().is_empty());
            // Partition 1 comes back: read again from its committed offset, and loaded once.
            rig.topics.assign(&[(TOPIC, 1)]);
            rig.until_committed("partition 1 is committed", &[(TOPIC, 1)])
                .await;
            assert_eq!(rig.warehouse.rows("ORDER LINES"), lines.live());
            assert_eq!(rig.warehouse.rows("ORDERS"), orders.live());
            let line_loads = rig
                .warehouse
                .loaded()
                .iter()
                .filter(|(t, _, _)| t == "ORDER LINES")
                .count();
            assert_eq!(line_loads, lines.0.len());
        },
    )
    .await
    .expect("run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_that_cannot_load_is_held_alone_and_loads_when_it_can() {
    let (source, topics) = memory_source();
    let (sink, warehouse) = memory_sink();
    warehouse.break_table("REFUNDS", true);
    let (orders, lines) = workload(&topics, 20);
    let mut refunds = Expected::default();
    for i in 0..10 {
        push(
            &topics,
            &mut refunds,
            OTHER_TOPIC,
            0,
            "refunds",
            "refund_id",
            json!(format!("r{i}")),
            "c",
            i,
        );
    }
    let cfg = config(100, 200, "on_table_error = \"pause\"", "");
    run(
        cfg,
        None,
        (source, topics),
        (sink, warehouse),
        |rig| async move {
            rig.until_committed("the other tables are committed", &[(TOPIC, 0), (TOPIC, 1)])
                .await;
            assert_eq!(rig.warehouse.rows("ORDERS"), orders.live());
            assert_eq!(rig.warehouse.rows("ORDER LINES"), lines.live());
            rig.until("the broken table's partition is paused", |r| {
                r.topics.is_paused(OTHER_TOPIC, 0)
            })
            .await;
            assert_eq!(
                rig.committed(OTHER_TOPIC, 0),
                0,
                "held records are not committed"
            );
            assert!(
                rig.dlq.sent().is_empty(),
                "on_table_error = pause dead-letters nothing"
            );
            // Fixed: the held records load on the next try, and the partition reads again.
            rig.warehouse.break_table("REFUNDS", false);
            rig.until_committed("the held table is committed", &[(OTHER_TOPIC, 0)])
                .await;
            assert_eq!(rig.warehouse.rows("REFUNDS"), refunds.live());
            assert!(!rig.topics.is_paused(OTHER_TOPIC, 0));
        },
    )
    .await
    .expect("run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_read_ahead_of_a_table_that_got_held_wait_behind_its_older_ones() {
    let (source, topics) = memory_source();
    let (sink, warehouse) = memory_sink();
    warehouse.break_table("REFUNDS", true);
    warehouse.gate(true);
    let (mut orders, mut refunds) = (Expected::default(), Expected::default());
    // The first batch (40): orders and the refunds' creates; read ahead while it loads: the
    // refunds' updates (same text keys) and more orders.
    for i in 0..10 {
        for j in 0..3 {
            let id = json!(i * 3 + j);
            push(&topics, &mut orders, TOPIC, 0, "orders", "id", id, "c", i);
        }
        let key = json!(format!("r-{i}"));
        push(
            &topics,
            &mut refunds,
            OTHER_TOPIC,
            0,
            "refunds",
            "refund_id",
            key,
            "c",
            i,
        );
    }
    for i in 0..10 {
        let key = json!(format!("r-{i}"));
        push(
            &topics,
            &mut refunds,
            OTHER_TOPIC,
            0,
            "refunds",
            "refund_id",
            key,
            "u",
            i + 50,
        );
        push(
            &topics,
            &mut orders,
            TOPIC,
            0,
            "orders",
            "id",
            json!(i),
            "u",
            i + 50,
        );
    }
    run(
        config(40, 300, "on_table_error = \"pause\"", ""),
        None,
        (source, topics),
        (sink, warehouse),
        |rig| async move {
            rig.until("the first batch waits and the next is read", |r| {
                r.warehouse.waiting() >= 1 && r.topics.unread() == 0
            })
            .await;
            rig.warehouse.gate(false);
            rig.until("the refunds are held", |r| {
                r.stats.blocked_tables() == ["REFUNDS"]
            })
            .await;
            // Fixed before the next batch (read ahead) loads: its refunds must still wait
            // behind the held ones, not load before them and leave them behind.
            rig.warehouse.break_table("REFUNDS", false);
            rig.until_committed("everything is committed", &[(TOPIC, 0), (OTHER_TOPIC, 0)])
                .await;
            assert_eq!(rig.warehouse.rows("ORDERS"), orders.live());
            assert_eq!(rig.warehouse.rows("REFUNDS"), refunds.live());
            assert!(rig.dlq.sent().is_empty());
            assert!(rig.stats.blocked_tables().is_empty());
        },
    )
    .await
    .expect("run");
}

/// The test plugin that misbehaves on demand.
fn misbehave_wasm() -> std::path::PathBuf {
    let plugin = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/dist/testing/misbehave.wasm");
    assert!(
        plugin.exists(),
        "{} is missing: run scripts/build-plugins.sh first (make test does)",
        plugin.display()
    );
    plugin
}

/// A chain of the misbehaving plugin alone (`mode = "keep"` keeps every change).
fn misbehave(mode: &str) -> String {
    format!(
        "[[plugins.chain]]\npath = \"{}\"\n[plugins.chain.config]\nmode = \"{mode}\"\n",
        misbehave_wasm().display()
    )
}

/// Two full batches of orders (integer keys, partition 0) and lines (text keys, partition 1):
/// 50, then 100 (a batch that filled up makes the next one twice as large).
fn two_batches(topics: &MemoryTopics) -> (Expected, Expected) {
    let (mut orders, mut lines) = (Expected::default(), Expected::default());
    for i in 0..75 {
        push(
            topics,
            &mut orders,
            TOPIC,
            0,
            "orders",
            "id",
            json!(i),
            "c",
            i,
        );
        let key = json!(format!("line-{i:03}-ü"));
        push(
            topics,
            &mut lines,
            TOPIC,
            1,
            "Order Lines",
            "line_id",
            key,
            "c",
            i,
        );
    }
    (orders, lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_chain_runs_on_the_next_batch_while_one_loads() {
    let (source, topics) = memory_source();
    let (sink, warehouse) = memory_sink();
    warehouse.latency(Duration::from_millis(300));
    warehouse.gate(true);
    let (orders, lines) = two_batches(&topics);
    run(
        config(50, 5_000, "", &misbehave("keep")),
        None,
        (source, topics),
        (sink, warehouse),
        |rig| async move {
            rig.until(
                "the second batch went through the chain during the first load",
                |r| r.warehouse.waiting() >= 1 && stat(&r.stats.plugin_runs) == 2,
            )
            .await;
            assert!(rig.warehouse.loaded().is_empty());
            assert_eq!(rig.committed(TOPIC, 0), 0);
            rig.warehouse.gate(false);
            rig.until_committed("everything is committed", &[(TOPIC, 0), (TOPIC, 1)])
                .await;
            assert_eq!(rig.warehouse.rows("ORDERS"), orders.live());
            assert_eq!(rig.warehouse.rows("ORDER LINES"), lines.live());
            // The run ahead was used, not repeated.
            assert_eq!(stat(&rig.stats.plugin_runs), 2);
            assert_eq!(stat(&rig.stats.validated), 150);
        },
    )
    .await
    .expect("run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_run_ahead_is_run_again_when_a_rebalance_changes_its_batch() {
    let (source, topics) = memory_source();
    let (sink, warehouse) = memory_sink();
    warehouse.latency(Duration::from_millis(20));
    warehouse.gate(true);
    let (orders, _) = two_batches(&topics);
    run(
        config(50, 5_000, "", &misbehave("keep")),
        None,
        (source, topics),
        (sink, warehouse),
        |rig| async move {
            rig.until("the second batch went through the chain", |r| {
                r.warehouse.waiting() >= 1 && stat(&r.stats.plugin_runs) == 2
            })
            .await;
            // Its lines' partition goes to another process (a revocation that gave up waiting
            // for the load): the batch the chain ran on is not the one that loads, so the chain
            // runs again on what is left.
            rig.topics.revoke_now(&[(TOPIC, 1)]);
            rig.warehouse.gate(false);
            rig.until_committed("the orders are committed", &[(TOPIC, 0)])
                .await;
            assert_eq!(rig.warehouse.rows("ORDERS"), orders.live());
            assert_eq!(stat(&rig.stats.plugin_runs), 3);
            // The first batch's 50 changes, then the second's 50 orders.
            assert_eq!(stat(&rig.stats.validated), 100);
            assert_eq!(
                rig.warehouse.rows("ORDER LINES").len(),
                25,
                "only the lines of the batch that was loading when the partition left"
            );
            assert_eq!(rig.committed(TOPIC, 1), 0);
        },
    )
    .await
    .expect("run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_during_a_failing_load_leaves_the_revoked_messages_to_their_new_owner() {
    let (source, topics) = memory_source();
    let (sink, warehouse) = memory_sink();
    warehouse.latency(Duration::from_millis(100));
    // The lines' table cannot load: its records would be dead-lettered (the default policy).
    warehouse.break_table("ORDER LINES", true);
    warehouse.gate(true);
    let (orders, _) = two_batches(&topics);
    run(
        config(50, 5_000, "", ""),
        None,
        (source, topics),
        (sink, warehouse),
        |rig| async move {
            rig.until("the first batch waits and the next is read", |r| {
                r.warehouse.waiting() >= 1 && r.topics.unread() == 0
            })
            .await;
            // The lines' partition leaves while the first batch loads (a revocation that gave
            // up waiting for the load), and no message follows.
            rig.topics.revoke_now(&[(TOPIC, 1)]);
            rig.warehouse.gate(false);
            rig.until_committed("the orders are committed", &[(TOPIC, 0)])
                .await;
            assert_eq!(rig.warehouse.rows("ORDERS"), orders.live());
            assert!(
                rig.dlq.sent().is_empty(),
                "the revoked partition's messages are its new owner's to load or dead-letter"
            );
            assert_eq!(rig.committed(TOPIC, 1), 0);
        },
    )
    .await
    .expect("run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_retried_after_a_rebalance_leaves_out_the_revoked_rows() {
    let (source, topics) = memory_source();
    let (sink, warehouse) = memory_sink();
    warehouse.outage(true);
    let (orders, _) = two_batches(&topics);
    run(
        config(50, 200, "", ""),
        None,
        (source, topics),
        (sink, warehouse),
        |rig| async move {
            rig.until("the first batch is retried", |r| {
                r.warehouse.statements() >= 2
            })
            .await;
            // The lines' partition leaves during the outage, maybe in the middle of an attempt
            // (a revocation that gave up waiting for it): the retries load the orders only (a
            // late retry could undo what the new owner loaded).
            rig.topics.revoke_now(&[(TOPIC, 1)]);
            let seen = rig.warehouse.statements();
            rig.until("another attempt after the rebalance", |r| {
                r.warehouse.statements() >= seen + 2
            })
            .await;
            rig.warehouse.outage(false);
            rig.until_committed("the orders are committed", &[(TOPIC, 0)])
                .await;
            assert_eq!(rig.warehouse.rows("ORDERS"), orders.live());
            assert!(rig.warehouse.rows("ORDER LINES").is_empty());
            assert!(rig.dlq.sent().is_empty());
            assert_eq!(rig.committed(TOPIC, 1), 0);
        },
    )
    .await
    .expect("run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_waits_for_the_load_in_flight_and_commits_what_it_loaded() {
    let (source, topics) = memory_source();
    let (sink, warehouse) = memory_sink();
    warehouse.latency(Duration::from_millis(20));
    warehouse.gate(true);
    let (orders, lines) = two_batches(&topics);
    run(
        config(50, 5_000, "", ""),
        None,
        (source, topics),
        (sink, warehouse),
        |rig| async move {
            rig.until("the first batch waits and the next is read", |r| {
                r.warehouse.waiting() >= 1 && r.topics.unread() == 0
            })
            .await;
            // The lines' partition goes to another process while the first batch (25 orders,
            // 25 lines) loads: the rebalance waits for that load.
            let revocation = tokio::spawn({
                let topics = rig.topics.clone();
                async move { topics.revoke(&[(TOPIC, 1)]).await }
            });
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(
                !revocation.is_finished(),
                "a revocation completed while a load of its partition was in flight"
            );
            assert_eq!(rig.committed(TOPIC, 1), 0);
            rig.warehouse.gate(false);
            revocation.await.expect("revocation");
            // Its last commit covers the lines that load loaded: the new owner starts after
            // them.
            assert_eq!(rig.committed(TOPIC, 1), 25);
            rig.until_committed("the orders are committed", &[(TOPIC, 0)])
                .await;
            assert_eq!(rig.warehouse.rows("ORDERS"), orders.live());
            let first: BTreeMap<String, (i32, i64)> = lines.live().into_iter().take(25).collect();
            assert_eq!(
                rig.warehouse.rows("ORDER LINES"),
                first,
                "the lines read ahead are the new owner's"
            );
            assert_eq!(
                rig.committed(TOPIC, 1),
                25,
                "nothing committed after it left"
            );
            assert!(rig.dlq.sent().is_empty());
        },
    )
    .await
    .expect("run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_between_two_attempts_leaves_its_rows_out_of_the_next() {
    let (source, topics) = memory_source();
    let (sink, warehouse) = memory_sink();
    warehouse.latency(Duration::from_millis(5));
    warehouse.outage(true);
    let (orders, _) = two_batches(&topics);
    run(
        config(50, 200, "", ""),
        None,
        (source, topics),
        (sink, warehouse),
        |rig| async move {
            rig.until("the first batch is retried", |r| {
                r.warehouse.statements() >= 2
            })
            .await;
            // The revocation waits for the attempt in flight, so it lands in the backoff; the
            // outage ends at once, and the next attempt must not load the lines any more.
            rig.topics.revoke(&[(TOPIC, 1)]).await;
            rig.warehouse.outage(false);
            rig.until_committed("the orders are committed", &[(TOPIC, 0)])
                .await;
            assert_eq!(rig.warehouse.rows("ORDERS"), orders.live());
            assert!(
                rig.warehouse.rows("ORDER LINES").is_empty(),
                "a retry loaded rows of a partition revoked before it"
            );
            assert!(rig.dlq.sent().is_empty());
            assert_eq!(rig.committed(TOPIC, 1), 0);
        },
    )
    .await
    .expect("run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_outage_commits_nothing_until_the_refused_row_is_sent() {
    let (source, topics) = memory_source();
    let (sink, warehouse) = memory_sink();
    warehouse.latency(Duration::from_millis(20));
    // Statements wait until the dead-letter queue is down.
    warehouse.gate(true);
    warehouse.poison("\"line-013-ü\"");
    let (orders, mut lines) = workload(&topics, 40);
    lines.0.remove("\"line-013-ü\"");
    run(
        config(200, 200, "", ""),
        None,
        (source, topics),
        (sink, warehouse),
        |rig| async move {
            rig.dlq.refuse(true);
            rig.warehouse.gate(false);
            // The row is isolated, and its dead letter retried while the queue refuses it.
            rig.until("the dead letter was retried", |r| {
                stat(&r.stats.errors) >= 4 && !r.warehouse.rows("ORDERS").is_empty()
            })
            .await;
            assert!(rig.dlq.sent().is_empty());
            assert_eq!(
                rig.committed(TOPIC, 1),
                0,
                "nothing is committed before the refused row is dead-lettered"
            );
            assert_eq!(rig.committed(TOPIC, 0), 0, "the batch commits as a whole");
            rig.dlq.refuse(false);
            rig.until_committed("everything is committed", &[(TOPIC, 0), (TOPIC, 1)])
                .await;
            let sent = rig.dlq.sent();
            assert_eq!(sent.len(), 1, "the refused row's message, once");
            assert_eq!((sent[0].partition, sent[0].stage.as_str()), (1, "load"));
            assert_eq!(rig.warehouse.rows("ORDERS"), orders.live());
            assert_eq!(rig.warehouse.rows("ORDER LINES"), lines.live());
        },
    )
    .await
    .expect("run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_offset_commits_lose_nothing_and_a_restart_replays_harmlessly() {
    let (source, topics) = memory_source();
    let (sink, warehouse) = memory_sink();
    warehouse.latency(Duration::from_millis(50));
    topics.refuse_commits(true);
    let (orders, lines) = workload(&topics, 30);
    let handle = topics.clone();
    let wh = warehouse.clone();
    let (orders_live, lines_live) = (orders.live(), lines.live());
    run(
        config(40, 200, "", ""),
        None,
        (source, topics),
        (sink, warehouse),
        |rig| async move {
            // Everything loads although no commit goes through.
            rig.until("everything is loaded", |r| {
                r.warehouse.rows("ORDERS") == orders_live
                    && r.warehouse.rows("ORDER LINES") == lines_live
                    && r.topics.unread() == 0
            })
            .await;
            assert_eq!(rig.committed(TOPIC, 0), 0);
            assert_eq!(rig.committed(TOPIC, 1), 0);
        },
    )
    .await
    .expect("a failed commit is not an error");
    // The process stops with nothing committed; its successor reads everything again and
    // loads it again (loads are idempotent), then commits.
    handle.refuse_commits(false);
    let loads_before = wh.loaded().len();
    let source = handle.restart();
    run(
        config(40, 200, "", ""),
        None,
        (source, handle.clone()),
        (wh.session(), wh.clone()),
        |rig| async move {
            rig.until_committed("everything is committed", &[(TOPIC, 0), (TOPIC, 1)])
                .await;
            assert_eq!(rig.warehouse.rows("ORDERS"), orders.live());
            assert_eq!(rig.warehouse.rows("ORDER LINES"), lines.live());
            assert!(rig.warehouse.loaded().len() > loads_before, "replayed");
        },
    )
    .await
    .expect("run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_fault_pauses_the_pipeline_until_the_chain_is_fixed() {
    let plugin = misbehave_wasm();
    let plugins = |mode: &str| {
        format!(
            "[plugins]\non_fault = \"pause\"\nwatch_interval_ms = 100\n\n[[plugins.chain]]\npath = \"{}\"\n\
             [plugins.chain.config]\nmode = \"{mode}\"\ntrigger = \"boom\"\n",
            plugin.display()
        )
    };
    let dir = std::env::temp_dir().join(format!("floe-run-loop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("floe.toml");
    let write = |mode: &str| {
        let cfg = config(100, 200, "", &plugins(mode));
        // The same text the reloader reads back (Config has no writer: rebuild it).
        let text = config_text(100, 200, "", &plugins(mode));
        std::fs::write(&path, text).expect("write config");
        cfg
    };
    let cfg = write("trap");
    let (source, topics) = memory_source();
    let (sink, warehouse) = memory_sink();
    let (mut orders, lines) = workload(&topics, 10);
    // One change the plugin faults on, in the same batch as good ones.
    let (k, v) = event("orders", "id", &json!(999), "c", 9, "boom");
    let boom = topics.push(TOPIC, 0, Some(&k), Some(&v));
    orders.0.insert("999".into(), Some((0, boom)));
    let path_for_run = path.clone();
    run(
        cfg,
        Some(&path_for_run),
        (source, topics),
        (sink, warehouse),
        |rig| async move {
            rig.until("the chain faulted twice", |r| stat(&r.stats.errors) >= 2)
                .await;
            assert!(
                rig.warehouse.loaded().is_empty(),
                "a paused batch loads nothing"
            );
            assert_eq!(
                rig.committed(TOPIC, 0),
                0,
                "nothing is committed while paused"
            );
            assert_eq!(rig.committed(TOPIC, 1), 0);
            assert!(
                rig.dlq.sent().is_empty(),
                "on_fault = pause dead-letters nothing"
            );
            let kafka_up = AtomicBool::new(true);
            assert_eq!(
                floe::health::not_ready(&rig.stats, &kafka_up),
                vec!["plugins: paused on a plugin fault"],
                "/readyz names the pause"
            );
            // The chain is fixed (hot swap): the paused batch goes through whole. The reloader
            // looks at modification times: the rewrite must not share the first write's.
            tokio::time::sleep(Duration::from_millis(1100)).await;
            write("keep");
            rig.until_committed("everything is committed", &[(TOPIC, 0), (TOPIC, 1)])
                .await;
            assert!(stat(&rig.stats.plugin_reloads) >= 1);
            assert_eq!(rig.warehouse.rows("ORDERS"), orders.live());
            assert_eq!(rig.warehouse.rows("ORDER LINES"), lines.live());
            assert!(floe::health::not_ready(&rig.stats, &kafka_up).is_empty());
        },
    )
    .await
    .expect("run");
    let _ = std::fs::remove_dir_all(&dir);
}
