"""Debezium JSON without the embedded schema (schemas.enable=false): floe takes the column
types from the existing target table and loads the changes."""

import json

from confluent_kafka import Producer

from harness import KAFKA, Run, run_until_idle, warehouse_connect

DDL = """CREATE TABLE "{table}" (
    TRANSACTION_ID NUMBER(38,0), USER_ID NUMBER(38,0), AMOUNT NUMBER(12,2), CURRENCY VARCHAR,
    STATUS VARCHAR, PAYMENT_METHOD VARCHAR, DESCRIPTION VARCHAR, METADATA VARIANT,
    CREATED_AT TIMESTAMP_TZ(9), UPDATED_AT TIMESTAMP_TZ(9), IS_DELETED BOOLEAN,
    CDC_OPERATION VARCHAR(1), CDC_TIMESTAMP TIMESTAMP_TZ(3), CDC_LSN NUMBER(20,0),
    CDC_KAFKA_PARTITION NUMBER(10,0), CDC_KAFKA_OFFSET NUMBER(20,0), CDC_LOADED_AT TIMESTAMP_TZ(9))"""


def row(tid, status, amount):
    return {
        "transaction_id": tid, "user_id": 9, "amount": amount, "currency": "EUR", "status": status,
        "payment_method": "card", "description": "schemaless \"row\" ✓", "metadata": '{"k": [1, 2]}',
        "created_at": "2026-01-02T03:04:05.123456Z", "updated_at": None,
    }


def event(op, lsn, before=None, after=None):
    return {
        "before": before, "after": after, "op": op, "ts_ms": 1_700_000_000_000,
        "source": {"schema": "public", "table": "transactions", "lsn": lsn, "ts_ms": 1_700_000_000_000},
    }


def test_events_without_schema_load_into_an_existing_table():
    run = Run("schemaless")
    topic = f"schemaless.{run.suffix}"
    wh = warehouse_connect()
    wh.cursor().execute(DDL.format(table=run.table))
    producer = Producer({"bootstrap.servers": KAFKA})
    messages = [
        (1, event("c", 100, after=row(1, "pending", "12.50"))),
        (1, event("u", 101, after=row(1, "completed", "99.99"))),
        (2, event("c", 102, after=row(2, "pending", None))),
        (2, event("d", 103, before={"transaction_id": 2})),
        (2, None),  # tombstone
    ]
    for tid, value in messages:
        producer.produce(
            topic, key=json.dumps({"transaction_id": tid}).encode(),
            value=None if value is None else json.dumps(value).encode(), partition=0,
        )
    producer.flush(30)
    floe = run_until_idle(run, FLOE__KAFKA__TOPICS=f'["{topic}"]')
    assert "tombstones=1" in floe.output()

    cur = wh.cursor()
    cur.execute(f'SELECT TRANSACTION_ID, STATUS, AMOUNT, METADATA, CREATED_AT, IS_DELETED, CDC_LSN FROM "{run.table}" ORDER BY 1')
    rows = cur.fetchall()
    assert [(r[0], r[1], str(r[2]) if r[2] is not None else None, r[5], r[6]) for r in rows] == [
        (1, "completed", "99.99", False, 101),
        (2, "pending", None, True, 103),
    ]
    assert json.loads(rows[0][3]) == {"k": [1, 2]}
    assert rows[0][4].isoformat() == "2026-01-02T03:04:05.123456+00:00"


def test_a_row_snowflake_refuses_goes_to_the_dead_letter_topic_and_the_rest_loads():
    """A change that decodes but that the warehouse cannot store (an amount that is not a
    number) is dead-lettered with Snowflake's reason; the rows around it load."""
    from confluent_kafka import Consumer

    run = Run("refused")
    topic = f"refused.{run.suffix}"
    wh = warehouse_connect()
    wh.cursor().execute(DDL.format(table=run.table))
    producer = Producer({"bootstrap.servers": KAFKA})
    bad = json.dumps(event("c", 201, after=row(11, "pending", "twelve euros"))).encode()
    for tid, value in [
        (10, json.dumps(event("c", 200, after=row(10, "pending", "1.00"))).encode()),
        (11, bad),
        (12, json.dumps(event("c", 202, after=row(12, "failed", "3.00"))).encode()),
        (13, json.dumps(event("c", 203, after=row(13, "completed", "4.00"))).encode()),
    ]:
        producer.produce(topic, key=json.dumps({"transaction_id": tid}).encode(), value=value, partition=0)
    producer.flush(30)
    # Without plugins: the default validator would refuse this amount before Snowflake sees it
    # (test_plugins covers that path); this test is about what Snowflake itself refuses.
    floe = run_until_idle(run, FLOE__KAFKA__TOPICS=f'["{topic}"]', FLOE__PLUGINS__CHAIN="[]")
    assert "looking for the rows it refuses" in floe.output()

    cur = wh.cursor()
    cur.execute(f'SELECT TRANSACTION_ID FROM "{run.table}" ORDER BY 1')
    assert [r[0] for r in cur.fetchall()] == [10, 12, 13]

    consumer = Consumer({"bootstrap.servers": KAFKA, "group.id": f"check-{run.suffix}", "auto.offset.reset": "earliest"})
    consumer.subscribe([run.dlq])
    got = None
    for _ in range(30):
        m = consumer.poll(1.0)
        if m is not None and m.error() is None:
            got = m
            break
    consumer.close()
    assert got is not None, "nothing in the dead-letter topic"
    assert got.value() == bad
    headers = {k: v.decode() for k, v in got.headers()}
    assert headers["floe.stage"] == "load"
    assert headers["floe.source.topic"] == topic
    assert headers["floe.reason"]
