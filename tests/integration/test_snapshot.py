"""Debezium's initial snapshot (op `r`): a second connector on the same table snapshots every
existing row into its own topic, and floe loads them like inserts."""

import json
import urllib.request

from harness import ROOT, Run, parity_problems, run_until_idle, wait_for_topic, warehouse_connect

CONNECT = "http://127.0.0.1:8083"


def _request(method: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        CONNECT + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        text = resp.read()
    return json.loads(text) if text else {}


def test_initial_snapshot_loads_existing_rows(pg):
    run = Run("snapshot")
    with pg.cursor() as cur:
        cur.execute("INSERT INTO transactions (user_id, status) VALUES (55, 'pending')")
        cur.execute("SELECT count(*) FROM transactions")
        rows = cur.fetchone()[0]
    spec = json.loads((ROOT / "docker" / "transaction_connector.json").read_text())
    prefix = f"snap{run.suffix}"
    config = spec["config"] | {
        "database.hostname": "127.0.0.1",
        "database.port": "5433",
        "topic.prefix": prefix,
        "slot.name": f"snap_{run.suffix}",
        "publication.name": f"snap_{run.suffix}",
        "slot.drop.on.stop": "true",
    }
    name = f"snapshot-{run.suffix}"
    _request("PUT", f"/connectors/{name}/config", config)
    topic = f"{prefix}.public.transactions"
    try:
        wait_for_topic(topic, rows, timeout=180)
        run_until_idle(run, FLOE__KAFKA__TOPICS=f'["{topic}"]')
    finally:
        _request("DELETE", f"/connectors/{name}")
    problems = parity_problems(pg, run.table, "soft")
    assert not problems, "\n".join(problems)
    cur = warehouse_connect().cursor()
    cur.execute(f'SELECT COUNT(*) FROM "{run.table}" WHERE "CDC_OPERATION" = \'r\'')
    assert cur.fetchone()[0] == rows
