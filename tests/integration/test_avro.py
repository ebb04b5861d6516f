"""Avro through a real Schema Registry: the stack's second Debezium connector writes the same
table as Avro in Confluent's wire format (Apicurio's Kafka Connect converter, schemas stored in
Apicurio Registry). floe fetches each writer schema by id and must load exactly what it loads
from JSON: same rows, same values, same column types."""

import time

from confluent_kafka import Consumer, Producer

from harness import (
    KAFKA, Floe, Run, dlq_messages, generate, run_until_idle, stack, wait_for_parity,
    warehouse_connect,
)
from test_parity import check_long_descriptions, edge_cases, touch_without_description

AVRO_TOPIC = "cdcavro.public.transactions"


def avro(**extra: str) -> dict[str, str]:
    return {"FLOE__KAFKA__TOPICS": f'["{AVRO_TOPIC}"]', **extra}


def column_types(table: str) -> dict[str, str]:
    wh = warehouse_connect()
    try:
        cur = wh.cursor()
        cur.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ?",
            (table,),
        )
        return {name: ty for name, ty in cur.fetchall()}
    finally:
        wh.close()


def test_avro_parity_and_same_types_as_json(pg, wh):
    run, json_run = Run("avro_parity"), Run("avro_parity_json")
    generate("load", "--ops", "4000", seed=41)
    longs = edge_cases(pg)
    floe = Floe(run, **avro())
    problems = wait_for_parity(pg, run.table, "soft", timeout=240)
    # Updates that leave the long descriptions out: Avro carries the unchanged-TOAST placeholder.
    touch_without_description(pg, longs)
    problems = problems or wait_for_parity(pg, run.table, "soft", timeout=120)
    assert floe.stop() == 0
    assert not problems, "\n".join(problems)
    check_long_descriptions(wh, run.table, longs)
    assert "decoded=" in floe.output()
    # The same table through JSON gets the same warehouse types.
    run_until_idle(json_run)
    avro_types, json_types = column_types(run.table), column_types(json_run.table)
    assert avro_types == json_types, f"avro {avro_types}\njson {json_types}"
    assert "DECIMAL" in avro_types["AMOUNT"] or "NUMBER" in avro_types["AMOUNT"], avro_types


def test_registry_outage_loses_nothing(pg, wh):
    run = Run("avro_registry")
    generate("load", "--ops", "1500", seed=42)
    # A fresh floe process has no schema cached: with the registry down it must wait, not skip.
    stack("stop", "registry")
    try:
        floe = Floe(run, **avro())
        time.sleep(12)
        assert floe.proc.poll() is None, floe.output()[-3000:]
        assert "schema registry unavailable" in floe.output(), floe.output()[-3000:]
        assert "loaded=0" in floe.output() or "loaded=" not in floe.output()
    finally:
        stack("start", "registry")
    problems = wait_for_parity(pg, run.table, "soft", timeout=240)
    assert floe.stop() == 0
    assert not problems, "\n".join(problems)


def first_messages(topic: str, n: int) -> list:
    consumer = Consumer({"bootstrap.servers": KAFKA, "group.id": f"peek-{time.time()}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    got = []
    deadline = time.time() + 60
    while len(got) < n and time.time() < deadline:
        m = consumer.poll(1.0)
        if m is not None and m.error() is None and m.value() is not None:
            got.append(m)
    consumer.close()
    assert len(got) == n, f"{topic} holds fewer than {n} messages"
    return got


def test_avro_poison_goes_to_the_dead_letter_topic(pg, wh):
    run = Run("avro_poison")
    topic = f"floe.test.avro.{run.suffix}"
    good = first_messages(AVRO_TOPIC, 3)
    unknown_id = b"\x00" + (987654).to_bytes(4, "big") + good[0].value()[5:]
    broken_datum = good[1].value()[:5] + b"\xff\xff\xff\xff"
    producer = Producer({"bootstrap.servers": KAFKA})
    messages = [(good[0].key(), good[0].value()), (good[0].key(), unknown_id),
                (good[1].key(), broken_datum), (good[1].key(), good[1].value()),
                (good[2].key(), good[2].value())]
    for key, value in messages:
        producer.produce(topic, key=key, value=value, partition=0)
    producer.flush(30)
    run_until_idle(run, FLOE__KAFKA__TOPICS=f'["{topic}"]')
    dead = dlq_messages(run, "decode", 2)
    assert sorted(m.value() for m in dead) == sorted([unknown_id, broken_datum])
    reasons = {m.value(): dict(m.headers())["floe.reason"].decode() for m in dead}
    assert "schema id 987654 is unknown to the schema registry" in reasons[unknown_id], reasons
    assert "not a valid Avro message" in reasons[broken_datum], reasons
    cur = wh.cursor()
    cur.execute(f'SELECT COUNT(*) FROM "{run.table}"')
    keys = {m.key() for m in good}
    assert cur.fetchone()[0] == len(keys), "the good messages around the poison must load"


def test_avro_without_a_registry_stops_with_a_clear_error(pg, wh):
    run = Run("avro_noregistry")
    floe = Floe(run, "--exit-when-idle", "6", **avro(FLOE__REGISTRY__URL=""))
    code = floe.wait(120)
    assert code != 0
    assert "no schema registry is configured (set registry.url)" in floe.output(), floe.output()[-2000:]
