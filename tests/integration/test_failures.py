"""Crashes, a warehouse outage and poison messages: the warehouse still matches the source.
Each runs twice: against the stack's stand-in, and against one that answers every statement
after 300 ms, as a real Snowflake does (loads then overlap kills, the outage and retries)."""

import json
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
from confluent_kafka import Consumer, Producer

from harness import (
    FAKESNOW_PORT, KAFKA, TOPIC, Floe, Run, SlowWarehouse, generate, parity_problems, run_until_idle,
    stack, stats_line, wait_for_parity,
)


@pytest.fixture(params=[0, 300], ids=["stand-in", "300ms"])
def warehouse(request):
    """(floe's env, the warehouse's port, the slow stand-in or None) for one round trip."""
    if request.param == 0:
        yield {}, FAKESNOW_PORT, None
        return
    slow = SlowWarehouse(latency_ms=request.param)
    try:
        slow.schema("PUBLIC")
        yield slow.env, slow.port, slow
    finally:
        slow.stop()


def in_background(fn, *args, **kwargs) -> threading.Thread:
    t = threading.Thread(target=fn, args=args, kwargs=kwargs, daemon=True)
    t.start()
    return t


def test_kill_9_and_restart_keeps_parity(pg, warehouse):
    env, port, _ = warehouse
    run = Run("crash")
    load = in_background(generate, "load", "--ops", "6000", "--rate", "600", seed=21)
    kills = 0
    while load.is_alive() or kills < 3:
        floe = Floe(run, FLOE__BATCH__MAX_RECORDS="200", **env)
        time.sleep(3.5)
        assert floe.proc.poll() is None, floe.output()[-2000:]
        floe.kill9()
        kills += 1
    load.join()
    run_until_idle(run, **env)
    assert kills >= 3
    problems = parity_problems(pg, run.table, "soft", port=port)
    assert not problems, "\n".join(problems)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics:\n{text}")


def probe(port: int, path: str) -> tuple[int, str]:
    """(status, body) of GET `path` on floe's HTTP listener."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_for_probe(port: int, path: str, status: int, timeout: float) -> str:
    """Waits until GET `path` answers `status`; returns its body."""
    deadline = time.time() + timeout
    seen = None
    while time.time() < deadline:
        try:
            seen = probe(port, path)
        except urllib.error.URLError as e:  # not listening yet
            seen = (None, str(e))
        if seen[0] == status:
            return seen[1]
        time.sleep(0.5)
    raise AssertionError(f"{path} never answered {status} in {timeout} s; last: {seen}")


def test_warehouse_outage_loses_nothing(pg, warehouse):
    env, wh_port, slow = warehouse
    run = Run("outage")
    port = free_port()
    floe = Floe(run, FLOE__STATS__PROMETHEUS_LISTEN=f"127.0.0.1:{port}", **env)
    try:
        load = in_background(generate, "load", "--ops", "3000", "--rate", "100", seed=31)
        # Ready once a broker is up (librdkafka's statistics, every 2 s) and Snowflake answered.
        assert wait_for_probe(port, "/readyz", 200, timeout=20) == "ready\n"
        time.sleep(1)
        if slow:
            slow.halt()
        else:
            stack("stop", "fakesnow")
        halted = time.time()
        try:
            # Not ready while Snowflake is out, and saying why; alive all along.
            body = wait_for_probe(port, "/readyz", 503, timeout=20)
            assert body.startswith("not ready\nsnowflake: "), body
            assert "kafka" not in body, body
            assert probe(port, "/healthz") == (200, "ok\n")
            time.sleep(max(0.0, halted + 22 - time.time()))
        finally:
            if slow:
                slow.start()
            else:
                stack("start", "fakesnow")
        load.join()
        # The same floe process catches up by itself once the warehouse is back.
        problems = wait_for_parity(pg, run.table, "soft", timeout=180, port=wh_port)
        assert wait_for_probe(port, "/readyz", 200, timeout=30) == "ready\n"
        # The outage shows in the Prometheus counters too.
        assert metric(port, "floe_errors_total") > 0
        assert metric(port, "floe_rows_loaded_total") > 0
        assert floe.stop() == 0
        assert not problems, "\n".join(problems)
        assert "load failed; nothing committed, retrying" in floe.output(), "the outage was not noticed"
    finally:
        if floe.proc.poll() is None:
            floe.kill9()  # never leave a floe running behind a failed test


POISON = [
    b"this is not json",
    b'{"schema": {"type": "struct"}, "payload": {"op": "c"}}',
    b'{"before": null, "after": {"transaction_id": 1}, "op": "x", "source": {"table": "transactions"}}',
    b'{"schema":',
]


def test_poison_messages_go_to_the_dead_letter_topic(pg, warehouse):
    env, port, _ = warehouse
    run = Run("poison")
    producer = Producer({"bootstrap.servers": KAFKA})
    with pg.cursor() as cur:
        cur.execute("INSERT INTO transactions (user_id, status) VALUES (77, 'pending')")
    for i, value in enumerate(POISON):
        key = json.dumps({"transaction_id": -i, "test": run.suffix}).encode()
        producer.produce(TOPIC, key=key, value=value, partition=i % 3)
    producer.flush(30)
    with pg.cursor() as cur:
        cur.execute("INSERT INTO transactions (user_id, status) VALUES (78, 'completed')")
    floe = run_until_idle(run, **env)
    problems = parity_problems(pg, run.table, "soft", port=port)
    assert not problems, "\n".join(problems)
    line = stats_line(floe.output())
    assert int(line.split("dlq=")[1].split()[0]) >= len(POISON), line

    consumer = Consumer({"bootstrap.servers": KAFKA, "group.id": f"check-{run.suffix}", "auto.offset.reset": "earliest"})
    consumer.subscribe([run.dlq])
    got = []
    deadline = time.time() + 30
    while len(got) < len(POISON) and time.time() < deadline:
        m = consumer.poll(1.0)
        # Poison left in the topic by earlier runs is dead-lettered too; keep this run's.
        if m is not None and m.error() is None and json.loads(m.key()).get("test") == run.suffix:
            got.append(m)
    consumer.close()
    assert sorted(m.value() for m in got) == sorted(POISON)
    for m in got:
        headers = {k: v.decode() for k, v in m.headers()}
        assert headers["floe.source.topic"] == TOPIC
        assert headers["floe.stage"] == "decode"
        assert headers["floe.reason"], headers
        assert int(headers["floe.source.offset"]) >= 0
        assert json.loads(m.key())["transaction_id"] <= 0


def test_a_process_stuck_in_an_outage_still_hands_partitions_over(pg):
    """A process that cannot load (the warehouse is out) stops taking messages; its Kafka
    consumer still serves rebalances, so a process that joins gets partitions during the
    outage, and both end with parity once it is over (300 ms per statement)."""
    slow = SlowWarehouse(latency_ms=300)
    floes = []
    try:
        slow.schema("PUBLIC")
        run = Run("handover")
        generate("load", "--ops", "3000", "--rate", "1000", seed=41)
        slow.halt()
        first = Floe(run, **slow.env)
        floes.append(first)
        deadline = time.time() + 90  # a full channel for 30 s, after the first batches
        while "fetching paused" not in first.output():
            assert time.time() < deadline, "the stuck process never paused fetching:\n" + first.output()[-3000:]
            assert first.proc.poll() is None, first.output()[-3000:]
            time.sleep(0.5)
        second = Floe(run, member=2, **slow.env)
        floes.append(second)
        deadline = time.time() + 60
        while "partitions revoked" not in first.output():
            assert time.time() < deadline, (
                "the stuck process never handed partitions over:\n" + first.output()[-3000:]
            )
            time.sleep(0.5)
        slow.start()
        problems = wait_for_parity(pg, run.table, "soft", timeout=180, port=slow.port)
        assert not problems, "\n".join(problems)
        for floe in floes:
            assert floe.stop() == 0, floe.output()[-3000:]
        assert "revoking anyway" not in first.output(), "the revocation should find a moment between two attempts"
    finally:
        for floe in floes:
            if floe.proc.poll() is None:
                floe.kill9()
        slow.stop()
