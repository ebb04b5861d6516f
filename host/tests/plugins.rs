//! The plugin host against real components (built by `scripts/build-plugins.sh` into
//! `plugins/dist/`): the default validator and enricher, plugins that misbehave on purpose, a
//! plugin built against another WIT version, and hot swap.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use floe::change::{
    Cell, Change, Column, ColumnType, KafkaPosition, Op, Row, SourcePosition, TableId,
};
use floe::config::{FaultPolicy, PluginConfig, PluginsConfig};
use floe::plugin::reload::{ChainReloader, Reload};
use floe::plugin::{Outcome, PluginChain, PluginEngine, PluginError};

fn dist(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/dist")
        .join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/build-plugins.sh first (make test does)",
        p.display()
    );
    p
}

fn spec(name: &str, path: PathBuf, config: &str) -> PluginConfig {
    PluginConfig {
        name: Some(name.into()),
        path,
        tables: Vec::new(),
        memory_mb: 64,
        timeout_ms: 1000,
        fuel: None,
        grants: Vec::new(),
        config: toml::from_str(config).expect("test config is TOML"),
    }
}

const GUIDE_RULES: &str = include_str!("../../tests/plugins/guide-validator.toml");

const ENRICHMENT: &str = r#"
dates = { transaction_date = "created_at" }
bands = [{ column = "amount", to = "amount_band", thresholds = [10, 100, 1000], labels = ["small", "medium", "large", "very_large"] }]
flags = [{ column = "amount", to = "is_high_value", min = 1000 }]
mask = [{ column = "payment_method", keep_last = 2 }]
static = { environment = "test" }
"#;

fn columns() -> Arc<[Column]> {
    let c = |name: &str, ty: ColumnType| Column {
        name: name.into(),
        ty,
        optional: true,
    };
    vec![
        c("transaction_id", ColumnType::Integer),
        c("user_id", ColumnType::Integer),
        c(
            "amount",
            ColumnType::Decimal {
                precision: Some(12),
                scale: 2,
            },
        ),
        c("status", ColumnType::Text),
        c("payment_method", ColumnType::Text),
        c("created_at", ColumnType::TimestampTz),
    ]
    .into()
}

fn change(op: Op, id: i64, user: Value, amount: Value, status: &str) -> Change {
    let row = Row {
        columns: columns(),
        cells: vec![
            Cell::Value(json!(id)),
            Cell::Value(user),
            Cell::Value(amount),
            Cell::Value(json!(status)),
            Cell::Value(json!("card")),
            Cell::Value(json!("2026-11-24T10:00:00.000000Z")),
        ],
    };
    Change {
        table: TableId {
            schema: "public".into(),
            table: "transactions".into(),
        },
        op,
        key: vec![("transaction_id".into(), json!(id))],
        before: (op == Op::Delete).then(|| row.clone()),
        after: (op != Op::Delete).then_some(row),
        position: SourcePosition::streamed(id as u64, None),
        source_ts_ms: 0,
        kafka: KafkaPosition::default(),
    }
}

fn engine() -> PluginEngine {
    PluginEngine::new(None).expect("engine")
}

fn cell<'a>(c: &'a Change, name: &str) -> Option<&'a Cell> {
    c.after.as_ref().and_then(|r| r.get(name))
}

#[test]
fn validator_applies_the_guides_rules() {
    let mut chain = PluginChain::build(
        &engine(),
        &[spec("validator", dist("validator.wasm"), GUIDE_RULES)],
    )
    .expect("validator loads");
    let mut changes = vec![
        change(Op::Create, 1, json!(7), json!("12.50"), "pending"),
        change(Op::Create, 2, json!(-3), json!("1.00"), "completed"),
        change(Op::Create, 3, json!(8), json!("abc"), "lost"),
        change(Op::Create, 1, json!(9), json!("2.00"), "failed"),
        change(Op::Update, 1, json!(7), Value::Null, "refunded"),
        change(Op::Delete, 2, json!(-3), json!("1.00"), "whatever"),
        change(Op::Create, 4, Value::Null, json!("1.00"), "pending"),
    ];
    let outcomes = chain.run(&mut changes);
    let reject = |reason: &str| Outcome::Reject {
        plugin: "validator".into(),
        reason: reason.into(),
    };
    assert_eq!(
        outcomes,
        vec![
            Outcome::Keep,
            reject("user_id: must be positive"),
            reject("amount: must be a number; status: must be one of pending, completed, failed, refunded, cancelled"),
            reject("transaction_id: duplicate value 1 in the batch"),
            Outcome::Keep,
            Outcome::Keep,
            reject("user_id: is required"),
        ]
    );
}

/// A delete frees its row's id for a later insert of the batch, read from its `before` image
/// or, without one, from its key.
#[test]
fn validator_unique_in_batch_is_freed_by_deletes() {
    let mut chain = PluginChain::build(
        &engine(),
        &[spec("validator", dist("validator.wasm"), GUIDE_RULES)],
    )
    .expect("validator loads");
    let create = |id| change(Op::Create, id, json!(7), json!("1.00"), "pending");
    let mut key_only = change(Op::Delete, 2, json!(7), json!("1.00"), "pending");
    key_only.before = None;
    let mut changes = vec![
        create(1),
        create(2),
        change(Op::Delete, 1, json!(7), json!("1.00"), "pending"),
        create(1),
        key_only,
        create(2),
        create(2),
    ];
    let outcomes = chain.run(&mut changes);
    assert_eq!(&outcomes[..6], &vec![Outcome::Keep; 6][..]);
    assert_eq!(
        outcomes[6],
        Outcome::Reject {
            plugin: "validator".into(),
            reason: "transaction_id: duplicate value 2 in the batch".into(),
        }
    );
}

#[test]
fn enricher_adds_derived_columns_and_masks() {
    let mut chain = PluginChain::build(
        &engine(),
        &[spec("enricher", dist("enricher.wasm"), ENRICHMENT)],
    )
    .expect("enricher loads");
    let mut changes = vec![
        change(Op::Create, 1, json!(7), json!("1500.00"), "pending"),
        change(Op::Create, 2, json!(7), json!("5.00"), "pending"),
        change(Op::Delete, 3, json!(7), json!("5.00"), "pending"),
    ];
    assert_eq!(chain.run(&mut changes), vec![Outcome::Keep; 3]);
    let a = &changes[0];
    assert_eq!(
        cell(a, "transaction_date"),
        Some(&Cell::Value(json!("2026-11-24")))
    );
    assert_eq!(
        cell(a, "amount_band"),
        Some(&Cell::Value(json!("very_large")))
    );
    assert_eq!(cell(a, "is_high_value"), Some(&Cell::Value(json!(true))));
    assert_eq!(cell(a, "payment_method"), Some(&Cell::Value(json!("**rd"))));
    assert_eq!(cell(a, "environment"), Some(&Cell::Value(json!("test"))));
    let cols = &a.after.as_ref().expect("after").columns;
    assert_eq!(
        cols.iter()
            .find(|c| &*c.name == "transaction_date")
            .map(|c| &c.ty),
        Some(&ColumnType::Date)
    );
    assert_eq!(
        cols.iter()
            .find(|c| &*c.name == "is_high_value")
            .map(|c| &c.ty),
        Some(&ColumnType::Boolean)
    );
    assert_eq!(
        cell(&changes[1], "amount_band"),
        Some(&Cell::Value(json!("small")))
    );
    // Rows that gained the same columns share one column list (the sink relies on it).
    assert!(Arc::ptr_eq(
        &cols.clone(),
        &changes[1].after.as_ref().expect("after").columns
    ));
    assert!(changes[2].after.is_none(), "deletes pass untouched");
}

#[test]
fn the_chain_runs_in_order_and_skips_other_tables() {
    let mut validator = spec("validator", dist("validator.wasm"), GUIDE_RULES);
    validator.tables = vec!["public.transactions".into()];
    let mut enricher = spec("enricher", dist("enricher.wasm"), ENRICHMENT);
    enricher.tables = vec!["other".into()];
    let mut chain = PluginChain::build(&engine(), &[validator, enricher]).expect("chain loads");
    let mut changes = vec![
        change(Op::Create, 1, json!(7), json!("1500.00"), "pending"),
        change(Op::Create, 2, json!(0), json!("1.00"), "pending"),
    ];
    let outcomes = chain.run(&mut changes);
    assert_eq!(outcomes[0], Outcome::Keep);
    assert!(matches!(&outcomes[1], Outcome::Reject { plugin, .. } if plugin == "validator"));
    assert_eq!(
        cell(&changes[0], "environment"),
        None,
        "enricher is scoped to table `other`"
    );
}

fn misbehave(mode: &str) -> PluginConfig {
    let mut s = spec(
        "misbehave",
        dist("testing/misbehave.wasm"),
        &format!("mode = \"{mode}\"\ntrigger = \"boom\""),
    );
    s.memory_mb = 32;
    s.timeout_ms = 200;
    s
}

/// Runs a batch that triggers the plugin's misbehaviour, then a harmless one: the first faults
/// (every change of it, with a reason naming the fault), the second is processed by a fresh
/// instance.
fn fault_then_recover(s: PluginConfig) -> String {
    let mut chain = PluginChain::build(&engine(), &[s]).expect("plugin loads");
    let mut bad = vec![
        change(Op::Create, 1, json!(7), json!("1.00"), "boom"),
        change(Op::Create, 2, json!(7), json!("1.00"), "pending"),
    ];
    let outcomes = chain.run(&mut bad);
    let reason = match &outcomes[0] {
        Outcome::Fault { plugin, reason } => {
            assert_eq!(plugin, "misbehave");
            reason.clone()
        }
        other => panic!("expected a fault, got {other:?}"),
    };
    assert_eq!(outcomes[0], outcomes[1], "the whole batch shares the fault");
    let mut good = vec![change(Op::Create, 3, json!(7), json!("1.00"), "pending")];
    assert_eq!(
        chain.run(&mut good),
        vec![Outcome::Keep],
        "a fresh instance takes over"
    );
    reason
}

/// What the `describe` plugin (the last of `chain`) says it was handed, per change.
fn described(chain: &mut PluginChain, changes: &mut [Change]) -> Vec<String> {
    chain
        .run(changes)
        .into_iter()
        .map(|o| match o {
            Outcome::Reject { reason, .. } => reason,
            other => panic!("describe rejects everything, got {other:?}"),
        })
        .collect()
}

/// An update carrying its `before` image, then a delete.
fn update_and_delete() -> Vec<Change> {
    let mut update = change(Op::Update, 1, json!(7), json!("1.00"), "pending");
    update.before = update.after.clone();
    vec![update, change(Op::Delete, 2, json!(7), json!("1.00"), "x")]
}

/// What a plugin says it reads (its `init` result) is what it is handed: those columns in row
/// order, `before` only when asked for; the key always whole. Edits still reach every column.
#[test]
fn a_plugin_is_handed_only_what_it_reads() {
    let describe = |reads: &str| {
        let s = spec(
            "describe",
            dist("testing/misbehave.wasm"),
            &format!("mode = \"describe\"\n{reads}"),
        );
        let mut chain = PluginChain::build(&engine(), &[s]).expect("plugin loads");
        described(&mut chain, &mut update_and_delete())
    };
    let all = "transaction_id,user_id,amount,status,payment_method,created_at";
    // What describe sees, without the table it names first.
    let seen = |reads: &str| -> Vec<String> {
        describe(reads)
            .into_iter()
            .map(|r| match r.strip_prefix("table=public.transactions ") {
                Some(rest) => rest.to_string(),
                None => panic!("{r}: not the change's table"),
            })
            .collect()
    };
    assert_eq!(
        seen(""),
        [
            format!("after={all} before={all}"),
            format!("after=- before={all}")
        ]
    );
    assert_eq!(
        seen("reads = [\"status\", \"transaction_id\", \"not_a_column\"]\nbefore = false"),
        ["after=transaction_id,status before=-", "after=- before=-"]
    );
    assert_eq!(
        seen("reads = [\"amount\"]\nbefore = true"),
        ["after=amount before=amount", "after=- before=amount"]
    );
}

/// Row images come as values in the order of the call's columns. A column an earlier plugin
/// added is one of them, with no value in the `before` images that lack it.
#[test]
fn columns_an_earlier_plugin_added_are_in_after_only() {
    let enricher = spec(
        "enricher",
        dist("enricher.wasm"),
        "static = { environment = \"test\" }",
    );
    let describe = spec(
        "describe",
        dist("testing/misbehave.wasm"),
        "mode = \"describe\"",
    );
    let mut chain = PluginChain::build(&engine(), &[enricher, describe]).expect("chain loads");
    let reasons = described(&mut chain, &mut update_and_delete());
    let all = "transaction_id,user_id,amount,status,payment_method,created_at";
    assert_eq!(
        reasons,
        [
            format!("table=public.transactions after={all},environment before={all}"),
            format!("table=public.transactions after=- before={all}"),
        ]
    );
}

/// A batch mixing tables reaches a plugin as one call per table, each change with its own
/// table, and the decisions come back in the batch's order.
#[test]
fn a_plugin_is_called_once_per_table() {
    let s = spec(
        "describe",
        dist("testing/misbehave.wasm"),
        "mode = \"describe\"\nreads = [\"transaction_id\"]",
    );
    let mut chain = PluginChain::build(&engine(), &[s]).expect("plugin loads");
    let in_table = |id: i64, schema: &str, table: &str| {
        let mut c = change(Op::Create, id, json!(7), json!("1.00"), "pending");
        c.table = TableId {
            schema: schema.into(),
            table: table.into(),
        };
        c
    };
    let mut changes = vec![
        in_table(1, "public", "a"),
        in_table(2, "shop", "a"),
        in_table(3, "public", "a"),
        in_table(4, "public", "b"),
    ];
    assert_eq!(
        described(&mut chain, &mut changes),
        [
            "table=public.a after=transaction_id before=-",
            "table=shop.a after=transaction_id before=-",
            "table=public.a after=transaction_id before=-",
            "table=public.b after=transaction_id before=-",
        ]
    );
    // So "unique in the batch" means within one table: the same id in two tables is fine.
    let validator = spec("validator", dist("validator.wasm"), GUIDE_RULES);
    let mut chain = PluginChain::build(&engine(), &[validator]).expect("chain loads");
    let mut changes = vec![
        in_table(1, "public", "a"),
        in_table(1, "shop", "a"),
        in_table(1, "public", "a"),
    ];
    let outcomes = chain.run(&mut changes);
    assert_eq!(outcomes[..2], [Outcome::Keep, Outcome::Keep]);
    assert!(
        matches!(&outcomes[2], Outcome::Reject { reason, .. } if reason.contains("duplicate")),
        "{:?}",
        outcomes[2]
    );
}

#[test]
fn a_trapping_plugin_faults_with_its_panic_message() {
    let reason = fault_then_recover(misbehave("trap"));
    assert!(reason.contains("trap"), "{reason}");
    assert!(
        reason.contains("misbehave: trapping as configured"),
        "{reason}"
    );
}

#[test]
fn an_endless_loop_hits_the_deadline() {
    let reason = fault_then_recover(misbehave("loop"));
    assert!(
        reason.contains("deadline") && reason.contains("200 ms"),
        "{reason}"
    );
}

/// A plugin that waits inside a host call (no Wasm code runs for the epoch deadline to
/// interrupt) faults at its deadline like a busy loop, with its clocks frozen or real.
fn waiting_hits_the_deadline(mode: &str) {
    for grants in [vec![], vec!["clock".to_string()]] {
        let mut s = misbehave(mode);
        s.grants = grants.clone();
        let started = Instant::now();
        let reason = fault_then_recover(s);
        // The plugin waits 30 s; 10 s guards against a hang, not a speed.
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(10),
            "{mode} {grants:?}: took {took:?}"
        );
        assert!(
            reason.contains("deadline") && reason.contains("200 ms"),
            "{mode} {grants:?}: {reason}"
        );
    }
}

#[test]
fn a_sleeping_plugin_hits_the_deadline() {
    waiting_hits_the_deadline("sleep");
}

#[test]
fn a_plugin_polling_a_timer_hits_the_deadline() {
    waiting_hits_the_deadline("poll");
}

#[test]
fn fuel_bounds_an_endless_loop() {
    let mut s = misbehave("loop");
    s.timeout_ms = 60_000;
    s.fuel = Some(50_000_000);
    let reason = fault_then_recover(s);
    assert!(reason.contains("fuel exhausted"), "{reason}");
}

#[test]
fn a_memory_bomb_hits_the_memory_limit() {
    let reason = fault_then_recover(misbehave("memory"));
    assert!(
        reason.contains("memory limit") && reason.contains("32 MiB"),
        "{reason}"
    );
}

#[test]
fn a_plugin_built_against_another_wit_version_is_refused_naming_both() {
    let err = PluginChain::build(
        &engine(),
        &[spec("future", dist("testing/future_wit.wasm"), "")],
    )
    .err()
    .expect("refused");
    let text = err.to_string();
    assert!(matches!(err, PluginError::Version { .. }), "{text}");
    assert!(
        text.contains("floe:plugin@0.4.0") && text.contains("floe:plugin@0.3.0"),
        "{text}"
    );
    assert!(text.contains("`future`"), "{text}");
}

#[test]
fn a_failing_init_names_the_plugin_and_its_reason() {
    let err = PluginChain::build(&engine(), &[misbehave("init-fail")])
        .err()
        .expect("refused");
    assert_eq!(err.plugin(), "misbehave");
    assert!(
        err.to_string().contains("failing init as configured"),
        "{err}"
    );
    let err = PluginChain::build(
        &engine(),
        &[spec("validator", dist("validator.wasm"), "rules = []")],
    )
    .err()
    .expect("refused");
    assert!(err.to_string().contains("`rules` is empty"), "{err}");
}

#[test]
fn without_the_clock_grant_time_stands_still() {
    let cfg = "processed_at = \"processed_at\"";
    let err = PluginChain::build(&engine(), &[spec("enricher", dist("enricher.wasm"), cfg)])
        .err()
        .expect("refused without the grant");
    assert!(err.to_string().contains("needs the clock"), "{err}");
    let mut s = spec("enricher", dist("enricher.wasm"), cfg);
    s.grants = vec!["clock".into()];
    let mut chain = PluginChain::build(&engine(), &[s]).expect("loads with the grant");
    let mut changes = vec![change(Op::Create, 1, json!(7), json!("1.00"), "pending")];
    chain.run(&mut changes);
    match cell(&changes[0], "processed_at") {
        Some(Cell::Value(Value::String(t))) => {
            assert!(t.starts_with("20") && t.ends_with('Z'), "{t}")
        }
        other => panic!("processed_at: {other:?}"),
    }
}

fn config_file(dir: &std::path::Path, environment: &str, plugin: &std::path::Path) -> String {
    format!(
        r#"
[kafka]
brokers = "127.0.0.1:1"
topics = ["t"]
[snowflake]
account = "a"
user = "u"
password = "p"
[plugins]
watch_interval_ms = 1
[[plugins.chain]]
name = "enricher"
path = "{}"
[plugins.chain.config]
static = {{ environment = "{environment}" }}
"#,
        dir.join(plugin).display()
    )
}

/// Polls until the reload the last change started has ended (a new chain is built on a thread
/// of its own), or two minutes passed.
fn settle(reloader: &mut ChainReloader, chain: &mut PluginChain) -> Reload {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        match reloader.poll(chain) {
            Reload::Unchanged if std::time::Instant::now() < until => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            other => return other,
        }
    }
}

#[test]
fn hot_swap_takes_new_config_and_files_and_keeps_the_old_chain_on_failure() {
    let dir = std::env::temp_dir().join(format!("floe-hot-swap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::copy(dist("enricher.wasm"), dir.join("p.wasm")).expect("copy");
    let cfg_path = dir.join("floe.toml");
    std::fs::write(&cfg_path, config_file(&dir, "v1", "p.wasm".as_ref())).expect("write");
    let cfg = floe::config::Config::load(&cfg_path).expect("config");
    let (mut reloader, mut chain) =
        ChainReloader::start(engine(), Some(cfg_path.clone()), &cfg.plugins).expect("start");
    let env_of = |chain: &mut PluginChain| {
        let mut c = vec![change(Op::Create, 1, json!(7), json!("1.00"), "pending")];
        chain.run(&mut c);
        cell(&c[0], "environment").cloned()
    };
    assert_eq!(env_of(&mut chain), Some(Cell::Value(json!("v1"))));
    assert!(matches!(reloader.poll(&mut chain), Reload::Unchanged));

    // A new plugin config is noticed at the next poll and built on a thread of its own: the
    // running chain keeps working meanwhile, and the new one takes over once it is ready.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&cfg_path, config_file(&dir, "v2", "p.wasm".as_ref())).expect("write");
    assert!(matches!(reloader.poll(&mut chain), Reload::Unchanged));
    assert!(reloader.is_building());
    assert_eq!(env_of(&mut chain), Some(Cell::Value(json!("v1"))));
    assert!(matches!(
        settle(&mut reloader, &mut chain),
        Reload::Swapped(_)
    ));
    assert!(!reloader.is_building());
    assert_eq!(env_of(&mut chain), Some(Cell::Value(json!("v2"))));

    // A broken replacement file is refused; the running chain stays.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::copy(dist("testing/future_wit.wasm"), dir.join("p.wasm")).expect("copy");
    match settle(&mut reloader, &mut chain) {
        Reload::Refused(m) => assert!(m.contains("floe:plugin@0.4.0"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(env_of(&mut chain), Some(Cell::Value(json!("v2"))));

    // SIGHUP (the flag its handler sets) forces a reload even when nothing changed on disk.
    std::fs::copy(dist("enricher.wasm"), dir.join("p.wasm")).expect("copy");
    let _ = settle(&mut reloader, &mut chain);
    reloader
        .hangup_flag()
        .store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(matches!(
        settle(&mut reloader, &mut chain),
        Reload::Swapped(_)
    ));
    assert_eq!(reloader.current().on_fault, FaultPolicy::DeadLetter);
    let _ = std::fs::remove_dir_all(&dir);
    let _: PluginsConfig = reloader.current().clone();
}

#[test]
fn validator_range_regex_and_max_length() {
    let rules = r#"
rules = [
  { column = "amount", check = "range", min = 0, max = 100 },
  { column = "status", check = "regex", pattern = "^[a-z]+$" },
  { column = "status", check = "max-length", max = 7 },
]
"#;
    let mut chain = PluginChain::build(
        &engine(),
        &[spec("validator", dist("validator.wasm"), rules)],
    )
    .expect("validator loads");
    let mut changes = vec![
        change(Op::Create, 1, json!(7), json!("100.00"), "pending"),
        change(Op::Create, 2, json!(7), json!("100.01"), "pending"),
        change(Op::Create, 3, json!(7), json!("-1"), "Pending"),
        change(Op::Create, 4, json!(7), Value::Null, "refunded"),
    ];
    let reject = |reason: &str| Outcome::Reject {
        plugin: "validator".into(),
        reason: reason.into(),
    };
    assert_eq!(
        chain.run(&mut changes),
        vec![
            Outcome::Keep,
            reject("amount: must be between 0 and 100"),
            reject("amount: must be between 0 and 100; status: must match ^[a-z]+$"),
            reject("status: longer than 7 characters"),
        ]
    );
    let err = PluginChain::build(
        &engine(),
        &[spec(
            "validator",
            dist("validator.wasm"),
            "rules = [{ column = \"a\", check = \"sometimes\" }]",
        )],
    )
    .err()
    .expect("an unknown check is refused");
    assert!(
        err.to_string().contains("unknown check `sometimes`"),
        "{err}"
    );
}

#[test]
fn enricher_hashes_with_salt() {
    let cfg = "hash = [{ column = \"status\", salt = \"s\" }]";
    let mut chain = PluginChain::build(&engine(), &[spec("enricher", dist("enricher.wasm"), cfg)])
        .expect("enricher loads");
    let mut changes = vec![change(Op::Create, 1, json!(7), json!("1.00"), "pending")];
    chain.run(&mut changes);
    // SHA-256 of "spending", hex.
    assert_eq!(
        cell(&changes[0], "status"),
        Some(&Cell::Value(json!(
            "262cd7e8d3156b5b97113a373c84d53289db4530e285d5c8db3e9874abc891a9"
        )))
    );
}

/// A chain of one `misbehave` plugin in `mode`, with a create and a delete to run through it.
fn editing(mode: &str) -> (PluginChain, Vec<Change>) {
    let chain = PluginChain::build(&engine(), &[misbehave(mode)]).expect("plugin loads");
    // The trigger's text in the insert: the edit modes edit the changes holding it.
    let changes = vec![
        change(Op::Create, 1, json!(7), json!("1.00"), "boom"),
        change(Op::Delete, 2, json!(7), json!("1.00"), "boom"),
    ];
    (chain, changes)
}

/// An edit of a key column would move the row away from its key: the change is rejected,
/// unedited. A delete has no `after` image to edit, so its (ignored) edits refuse nothing.
#[test]
fn an_edit_of_a_key_column_is_rejected() {
    let (mut chain, mut changes) = editing("edit-key");
    let before = changes[0].clone();
    assert_eq!(
        chain.run(&mut changes),
        vec![
            Outcome::Reject {
                plugin: "misbehave".into(),
                reason: "plugin misbehave edited key column transaction_id; plugins may not change key columns".into(),
            },
            Outcome::Keep,
        ]
    );
    assert_eq!(changes[0], before, "a refused edit is not applied");
}

/// An edit of one of floe's own columns would corrupt the MERGE: the change is rejected, the
/// name upper-cased as in the warehouse. The pipeline sets which names are floe's; the chain
/// keeps them across a reload.
#[test]
fn an_edit_of_floes_columns_is_rejected() {
    let (mut chain, mut changes) = editing("edit-reserved");
    assert_eq!(
        chain.run(&mut changes),
        vec![
            Outcome::Reject {
                plugin: "misbehave".into(),
                reason: "plugin misbehave edited floe's column IS_DELETED; plugins may not change floe's columns".into(),
            },
            Outcome::Keep,
        ]
    );
    assert_eq!(cell(&changes[0], "is_deleted"), None);

    // Named otherwise, floe's flag leaves `is_deleted` free for plugins.
    chain.set_reserved_columns(vec!["_floe_deleted".into()]);
    assert_eq!(chain.run(&mut changes), vec![Outcome::Keep; 2]);
    assert_eq!(
        cell(&changes[0], "is_deleted"),
        Some(&Cell::Value(json!(true)))
    );

    let plugins = PluginsConfig {
        chain: vec![misbehave("keep")],
        ..PluginsConfig::default()
    };
    let (reloader, mut chain) = ChainReloader::start(engine(), None, &plugins).expect("start");
    chain.set_reserved_columns(vec!["_floe_deleted".into()]);
    reloader
        .hangup_flag()
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let mut reloader = reloader;
    assert!(matches!(
        settle(&mut reloader, &mut chain),
        Reload::Swapped(_)
    ));
    assert_eq!(chain.reserved_columns(), ["_FLOE_DELETED"]);
}

/// Loads `misbehave` in mode `init-stderr-panic` (stderr kept, or granted), expecting a load
/// error naming it; returns the error's text.
fn load_panicking_init(grants: &[&str]) -> String {
    let mut s = misbehave("init-stderr-panic");
    s.grants = grants.iter().map(|g| g.to_string()).collect();
    let err = PluginChain::build(&engine(), &[s])
        .err()
        .expect("a panicking init refuses the plugin");
    assert!(matches!(err, PluginError::Init { .. }), "{err}");
    assert_eq!(err.plugin(), "misbehave");
    err.to_string()
}

/// `init` writing to stderr (a blocking WASI call) then panicking is a load error naming the
/// plugin wherever floe loads it: on a plain thread, inside the runtime's `block_on` (startup),
/// on a runtime worker (reload), or in a current-thread runtime. floe survives and loads on.
#[test]
fn a_panicking_init_that_writes_stderr_is_a_load_error() {
    let check = |text: &str, grants: &[&str]| {
        assert!(
            text.contains("plugin `misbehave`: init failed"),
            "{grants:?}: {text}"
        );
        if grants.is_empty() {
            // Kept stderr: its last lines explain the fault.
            assert!(
                text.contains("misbehave: panicking in init as configured"),
                "{text}"
            );
        }
    };
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for grants in [&[][..], &["stderr"][..]] {
        check(&load_panicking_init(grants), grants);
        check(
            &multi.block_on(async { load_panicking_init(grants) }),
            grants,
        );
        let owned: Vec<&'static str> = grants.to_vec();
        let on_worker = multi
            .block_on(multi.spawn(async move { load_panicking_init(&owned) }))
            .expect("the worker survives");
        check(&on_worker, grants);
        check(
            &single.block_on(async { load_panicking_init(grants) }),
            grants,
        );
    }
    // Still standing: a plugin loads and runs, inside the runtime too.
    let outcomes = multi.block_on(async {
        let mut chain = PluginChain::build(&engine(), &[misbehave("keep")]).expect("loads");
        chain.run(&mut [change(Op::Create, 1, json!(7), json!("1.00"), "pending")])
    });
    assert_eq!(outcomes, vec![Outcome::Keep]);
}
