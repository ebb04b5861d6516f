"""The Wasm plugin chain on the real pipeline: the default validator and enricher, the
rejects table and dead-letter topic, hot swap inside a running floe, and both plugin-fault
policies. Rows a test makes the plugins refuse are deleted from the source afterwards, so the
other tests' parity (which reads the whole topic) is not affected."""

import json
import time
from datetime import timezone

import snowflake.connector

from harness import (
    CONFIG, Floe, Run, config_with_plugins, dlq_messages, local_plugins_section,
    parity_problems, run_until_idle, stats_line, wait_for_parity, warehouse_connect,
)

ALLOWED = "pending, completed, failed, refunded, cancelled"


def insert(pg, rows) -> list[int]:
    """Inserts (user_id, amount, status, description) rows, one transaction each."""
    ids = []
    with pg.cursor() as cur:
        for user_id, amount, status, description in rows:
            cur.execute(
                "INSERT INTO transactions (user_id, amount, currency, status, description) "
                "VALUES (%s, %s, 'EUR', %s, %s) RETURNING transaction_id",
                (user_id, amount, status, description),
            )
            ids.append(cur.fetchone()[0])
    return ids


def delete(pg, ids) -> None:
    with pg.cursor() as cur:
        cur.execute("DELETE FROM transactions WHERE transaction_id = ANY(%s)", (list(ids),))


def target_ids(table: str, ids) -> set[int]:
    """The `ids` present in `table` (none while floe has not created it yet)."""
    wh = warehouse_connect()
    try:
        cur = wh.cursor()
        cur.execute(f'SELECT TRANSACTION_ID FROM "{table}" WHERE TRANSACTION_ID IN ({",".join(map(str, ids))})')
        return {int(r[0]) for r in cur.fetchall()}
    except snowflake.connector.errors.ProgrammingError as e:
        if "does not exist" in str(e):
            return set()
        raise
    finally:
        wh.close()


def wait_loaded(table: str, ids, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while target_ids(table, ids) != set(ids):
        assert time.time() < deadline, f"rows {ids} did not reach {table} in {timeout}s"
        time.sleep(1)


def environment_of(table: str, ids) -> dict[int, str]:
    wh = warehouse_connect()
    try:
        cur = wh.cursor()
        cur.execute(f'SELECT TRANSACTION_ID, ENVIRONMENT FROM "{table}" WHERE TRANSACTION_ID IN ({",".join(map(str, ids))})')
        return {int(r[0]): r[1] for r in cur.fetchall()}
    finally:
        wh.close()


def key_id(raw: bytes | str) -> int:
    k = json.loads(raw)
    return int(k.get("payload", k)["transaction_id"])


def test_validator_and_enricher_end_to_end(pg, wh):
    """The warehouse holds exactly the accepted rows, with their derived columns; the rejects
    table and the dead-letter topic hold exactly the refused ones, with their reasons."""
    run = Run("plugins")
    good = insert(pg, [(21, "5.00", "pending", "a"), (22, "1500.00", "completed", "b"),
                       (23, None, "failed", "c"), (24, "50.00", "refunded", None)])
    bad = insert(pg, [(0, "1.00", "pending", "zero user"), (-4, "1.00", "pending", "negative user"),
                      (25, "1.00", "lost", "unknown status")])
    expected_reasons = {
        bad[0]: "user_id: must be positive",
        bad[1]: "user_id: must be positive",
        bad[2]: f"status: must be one of {ALLOWED}",
    }
    try:
        floe = run_until_idle(run)
        problems = parity_problems(pg, run.table, exclude=frozenset(bad))
        assert not problems, "\n".join(problems)
        assert target_ids(run.table, bad) == set(), "refused rows must not be loaded"

        cur = wh.cursor()
        cur.execute(
            f'SELECT TRANSACTION_ID, TRANSACTION_DATE, AMOUNT_BAND, IS_HIGH_VALUE, ENVIRONMENT, '
            f'PIPELINE_VERSION, PROCESSED_AT, CREATED_AT FROM "{run.table}" '
            f'WHERE TRANSACTION_ID IN ({",".join(map(str, good))}) ORDER BY 1'
        )
        rows = cur.fetchall()
        assert [r[0] for r in rows] == good
        bands = {r[0]: (r[2], r[3]) for r in rows}
        assert bands == {good[0]: ("small", False), good[1]: ("very_large", True),
                         good[2]: (None, None), good[3]: ("medium", False)}
        for r in rows:
            assert r[1] == r[7].astimezone(timezone.utc).date(), r
            assert (r[4], r[5]) == ("local", "0.1.0")
            assert r[6] is not None

        # The rejects table: this test's refused rows, each with the validator's reason. Rows
        # refused in earlier runs on the same stack were deleted from the source since.
        cur.execute(f'SELECT RECORD_KEY, REASON, PLUGIN, RAW_EVENT, SOURCE_TOPIC FROM "{run.table}_REJECTS"')
        rejects = {key_id(r[0]): r for r in cur.fetchall()}
        assert set(bad) <= set(rejects), rejects.keys()
        with pg.cursor() as pcur:
            pcur.execute("SELECT transaction_id FROM transactions WHERE transaction_id = ANY(%s)",
                         (list(set(rejects) - set(bad)),))
            assert pcur.fetchall() == [], "a row still in the source was rejected"
        for tid, reason in expected_reasons.items():
            _, got_reason, plugin, raw, topic = rejects[tid]
            assert (got_reason, plugin, topic) == (reason, "validator", "cdc.public.transactions")
            assert json.loads(raw)["payload"]["after"]["transaction_id"] == tid

        msgs = dlq_messages(run, "plugin", expect=len(rejects))
        by_key = {key_id(m.key()): m for m in msgs}
        assert set(by_key) == set(rejects)
        for tid, reason in expected_reasons.items():
            headers = {k: v.decode() for k, v in by_key[tid].headers()}
            assert headers["floe.plugin"] == "validator"
            assert headers["floe.reason"] == reason
        line = stats_line(floe.output())
        assert int(line.split("rejected=")[1].split()[0]) == len(rejects), line
    finally:
        delete(pg, bad)


def test_hot_swap_inside_a_running_pipeline(pg):
    """A changed plugin config applies between batches without a restart; a broken
    replacement is refused and the running chain goes on; parity holds across both."""
    run = Run("hotswap")
    section = local_plugins_section()
    cfg = config_with_plugins(run, section.replace('environment = "local"', 'environment = "before-swap"'))
    floe = Floe(run, config=cfg)
    try:
        first = insert(pg, [(31, "1.00", "pending", "first")] * 3)
        wait_loaded(run.table, first)

        cfg.write_text(cfg.read_text().replace("before-swap", "after-swap"))
        time.sleep(2.5)  # longer than the watch interval (1 s)
        second = insert(pg, [(32, "2.00", "pending", "second")] * 3)
        wait_loaded(run.table, second)

        # A replacement built against another WIT version: refused, the old chain stays.
        cfg.write_text(cfg.read_text()
                       .replace("plugins/dist/validator.wasm", "plugins/dist/testing/future_wit.wasm")
                       .replace("after-swap", "broken-swap"))
        time.sleep(2.5)
        third = insert(pg, [(33, "3.00", "pending", "third")] * 3)
        wait_loaded(run.table, third)

        env = environment_of(run.table, first + second + third)
        assert {env[i] for i in first} == {"before-swap"}
        assert {env[i] for i in second} == {"after-swap"}
        assert {env[i] for i in third} == {"after-swap"}, "the refused chain must not run"
        problems = wait_for_parity(pg, run.table)
        assert not problems, "\n".join(problems)
    finally:
        floe.stop()
    out = floe.output()
    assert "plugin chain reloaded" in out
    assert "plugin reload refused" in out and "floe:plugin@0.4.0" in out


def misbehaving_chain(run: Run, policy: str, mode: str = "trap") -> str:
    """The misbehave test plugin, misbehaving on batches holding this run's trigger text."""
    return f"""[plugins]
on_fault = "{policy}"

[[plugins.chain]]
path = "plugins/dist/testing/misbehave.wasm"
timeout_ms = 300
[plugins.chain.config]
mode = "{mode}"
trigger = "boom-{run.suffix}"
"""


def test_a_plugin_fault_dead_letters_its_batch(pg, wh):
    run = Run("fault")
    cfg = config_with_plugins(run, misbehaving_chain(run, "dead-letter"))
    run_until_idle(run, config=cfg)  # catch up first, so the faulting batch holds only our row
    boom = insert(pg, [(41, "1.00", "pending", f"boom-{run.suffix}")])
    try:
        floe = run_until_idle(run, config=cfg)
        assert "plugin fault" in floe.output()
        assert target_ids(run.table, boom) == set()
        problems = parity_problems(pg, run.table, exclude=frozenset(boom))
        assert not problems, "\n".join(problems)
        msgs = [m for m in dlq_messages(run, "plugin", expect=1) if key_id(m.key()) == boom[0]]
        assert len(msgs) == 1
        headers = {k: v.decode() for k, v in msgs[0].headers()}
        assert headers["floe.plugin"] == "misbehave"
        assert headers["floe.reason"].startswith("plugin-fault: trap"), headers
        assert "misbehave: trapping as configured" in headers["floe.reason"]
        cur = wh.cursor()
        cur.execute(f'SELECT RECORD_KEY, REASON, PLUGIN FROM "{run.table}_REJECTS"')
        rows = [r for r in cur.fetchall() if key_id(r[0]) == boom[0]]
        assert len(rows) == 1 and rows[0][1].startswith("plugin-fault: trap") and rows[0][2] == "misbehave"
    finally:
        delete(pg, boom)


def test_the_pause_policy_holds_the_batch_until_the_plugin_is_fixed(pg):
    run = Run("pause")
    cfg = config_with_plugins(run, misbehaving_chain(run, "pause"))
    run_until_idle(run, config=cfg)
    boom = insert(pg, [(42, "1.00", "pending", f"boom-{run.suffix}")])
    floe = Floe(run, config=cfg)
    try:
        deadline = time.time() + 90
        while "pipeline paused" not in floe.output():
            assert time.time() < deadline, "floe did not pause on the plugin fault"
            time.sleep(1)
        time.sleep(3)
        assert target_ids(run.table, boom) == set(), "nothing moves while paused"
        # The fix: swap the faulty plugin out of the running floe.
        cfg.write_text(CONFIG.read_text())
        problems = wait_for_parity(pg, run.table)
        assert not problems, "\n".join(problems)
    finally:
        floe.stop()
    assert "plugin chain reloaded" in floe.output()
    assert [m for m in dlq_messages(run, "plugin", expect=0, timeout=3)] == []


def test_a_sleeping_plugin_and_a_key_editing_plugin_leave_floe_running(pg):
    """A plugin that sleeps far beyond its deadline faults at the deadline (its batch
    dead-lettered, floe goes on); a plugin that edits the key has that change rejected."""
    for mode, stage, reason in (("sleep", "plugin", "plugin-fault: deadline"),
                                ("edit-key", "plugin", "edited key column transaction_id")):
        run = Run(f"misbehave_{mode.replace('-', '_')}")
        cfg = config_with_plugins(run, misbehaving_chain(run, "dead-letter", mode))
        run_until_idle(run, config=cfg)
        boom = insert(pg, [(43, "1.00", "pending", f"boom-{run.suffix}")])
        try:
            # Each run exits 0 once idle: floe survived the misbehaving batch.
            run_until_idle(run, config=cfg)
            after = insert(pg, [(44, "2.00", "pending", "after the misbehaving batch")])
            run_until_idle(run, config=cfg)
            assert target_ids(run.table, boom) == set(), mode
            assert target_ids(run.table, after) == set(after), mode
            msgs = [m for m in dlq_messages(run, stage, expect=1) if key_id(m.key()) == boom[0]]
            assert len(msgs) == 1, mode
            got = {k: v.decode() for k, v in msgs[0].headers()}["floe.reason"]
            assert reason in got, (mode, got)
        finally:
            delete(pg, boom)


def test_a_plugin_whose_init_writes_stderr_and_panics(pg):
    """At startup floe refuses to run without its chain and says which plugin; swapped in while
    floe runs, the broken chain is refused and the old one goes on."""
    run = Run("init_panic")
    broken = misbehaving_chain(run, "dead-letter", "init-stderr-panic")
    cfg = config_with_plugins(run, broken)
    floe = Floe(run, config=cfg)
    assert floe.wait(60) != 0
    assert "misbehave" in floe.output() and "panicking in init" in floe.output(), floe.output()[-2000:]
    cfg.write_text(CONFIG.read_text())
    floe = Floe(run, config=cfg)
    try:
        first = insert(pg, [(45, "1.00", "pending", "before the broken swap")])
        wait_loaded(run.table, first)
        cfg.write_text(CONFIG.read_text().split("\n[plugins]")[0] + "\n" + broken)
        time.sleep(3)
        second = insert(pg, [(46, "1.00", "pending", "after the broken swap")])
        wait_loaded(run.table, second)
        assert floe.proc.poll() is None, "floe must survive a broken reload"
    finally:
        assert floe.stop() == 0, floe.output()[-2000:]
    assert "plugin reload refused" in floe.output()
