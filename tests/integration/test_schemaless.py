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
