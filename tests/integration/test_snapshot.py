"""Debezium's initial snapshot (op `r`): a second connector on the same table snapshots every
existing row into its own topic, and floe loads them like inserts."""

from harness import Run, connect_request, connector_config, parity_problems, run_until_idle, wait_for_topic, warehouse_connect


def test_initial_snapshot_loads_existing_rows(pg):
    run = Run("snapshot")
    with pg.cursor() as cur:
        cur.execute("INSERT INTO transactions (user_id, status) VALUES (55, 'pending')")
        cur.execute("SELECT count(*) FROM transactions")
        rows = cur.fetchone()[0]
    prefix = f"snap{run.suffix}"
    config = connector_config("transaction_connector") | {
        "topic.prefix": prefix,
        "slot.name": f"snap_{run.suffix}",
        "publication.name": f"snap_{run.suffix}",
        "slot.drop.on.stop": "true",
    }
    name = f"snapshot-{run.suffix}"
    connect_request("PUT", f"/connectors/{name}/config", config)
    topic = f"{prefix}.public.transactions"
    try:
        wait_for_topic(topic, rows, timeout=180)
        run_until_idle(run, FLOE__KAFKA__TOPICS=f'["{topic}"]')
    finally:
        connect_request("DELETE", f"/connectors/{name}")
    problems = parity_problems(pg, run.table, "soft")
    assert not problems, "\n".join(problems)
    cur = warehouse_connect().cursor()
    cur.execute(f'SELECT COUNT(*) FROM "{run.table}" WHERE "CDC_OPERATION" = \'r\'')
    assert cur.fetchone()[0] == rows
