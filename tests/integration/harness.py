"""Helpers for the end-to-end tests: the real local stack (scripts/stack.sh up), the floe
binary, and the parity check between PostgreSQL and the Snowflake stand-in.

Every test runs floe with its own consumer group, dead-letter topic and target table, reading the
Debezium topic from the beginning, so the target must end up equal to the source table as it is
now, whatever other tests did to the source before."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import psycopg
import snowflake.connector

ROOT = Path(__file__).resolve().parents[2]
FLOE_BIN = Path(os.environ.get("FLOE_BIN", ROOT / "target" / "release" / "floe"))
CONFIG = ROOT / "config" / "local.toml"
STACK = ROOT / "scripts" / "stack.sh"
LOGS = Path(os.environ.get("FLOE_CACHE", ROOT / ".cache")) / "test-logs"
PG_DSN = "host=127.0.0.1 port=5433 user=postgres password=postgres dbname=postgres"
FAKESNOW_PORT = int(os.environ.get("FLOE_FAKESNOW_PORT", "8086"))
KAFKA = "127.0.0.1:9092"
TOPIC = "cdc.public.transactions"

COLUMNS = [
    "transaction_id", "user_id", "amount", "currency", "status", "payment_method",
    "description", "metadata", "created_at", "updated_at",
]


def pg_connect() -> psycopg.Connection:
    return psycopg.connect(PG_DSN, autocommit=True)


def warehouse_connect(port: int = FAKESNOW_PORT) -> snowflake.connector.SnowflakeConnection:
    return snowflake.connector.connect(
        user="floe", password="test", account="local", host="127.0.0.1", port=port,
        protocol="http", database="CDC_WAREHOUSE", schema="PUBLIC",
        session_parameters={"TIMEZONE": "UTC"}, paramstyle="qmark",
        network_timeout=30, login_timeout=30,
    )


@dataclass
class Run:
    """Names that keep one test's floe apart from the others'."""

    name: str
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def table(self) -> str:
        return f"T_{self.name.upper()}_{self.suffix.upper()}"

    @property
    def dlq(self) -> str:
        return f"floe.dlq.{self.name}.{self.suffix}"

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "FLOE__KAFKA__GROUP_ID": f"floe-test-{self.name}-{self.suffix}",
                "FLOE__KAFKA__CONSUMER_PROPERTIES__GROUP.INSTANCE.ID": f"floe-test-{self.suffix}",
                "FLOE__KAFKA__DLQ_TOPIC": self.dlq,
                "FLOE__SNOWFLAKE__TABLE": self.table,
                "FLOE__SNOWFLAKE__VIEWS_FILE": "",
                "FLOE__BATCH__MAX_RECORDS": "500",
                "FLOE__BATCH__MAX_WAIT_MS": "500",
                "FLOE__STATS__INTERVAL_SECS": "2",
            }
        )
        env.update(extra)
        return env


class Floe:
    """One floe process, logging to .cache/test-logs/<name>.log. `member` > 1 starts another
    process of the same consumer group (its own static member id and log)."""

    def __init__(self, run: Run, *args: str, config: Path = CONFIG, member: int = 1, **env: str):
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log_path = LOGS / f"{run.name}-{run.suffix}{'' if member == 1 else f'-{member}'}.log"
        if member > 1:
            env.setdefault("FLOE__KAFKA__CONSUMER_PROPERTIES__GROUP.INSTANCE.ID", f"floe-test-{run.suffix}-{member}")
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(FLOE_BIN), "run", "--config", str(config), *args],
            cwd=ROOT, env=run.env(**env), stdout=self.log, stderr=subprocess.STDOUT,
        )

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")


def run_until_idle(run: Run, idle_secs: int = 6, timeout: float = 600, config: Path = CONFIG,
                   **env: str) -> Floe:
    """Runs floe until it has loaded everything in the topic; fails on a non-zero exit."""
    floe = Floe(run, "--exit-when-idle", str(idle_secs), config=config, **env)
    try:
        code = floe.wait(timeout)
    except subprocess.TimeoutExpired:
        floe.kill9()  # never leave a floe running behind a failed test
        raise AssertionError(f"floe did not catch up in {timeout}s; log: {floe.log_path}\n{floe.output()[-3000:]}")
    assert code == 0, f"floe exited with {code}; log: {floe.log_path}\n{floe.output()[-3000:]}"
    return floe


def topic_size(topic: str) -> int:
    """Messages ever written to `topic` (sum of the partitions' end offsets); 0 if it is missing."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": KAFKA, "group.id": "size-probe"})
    try:
        meta = c.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            return 0
        return sum(
            c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in meta.partitions
        )
    finally:
        c.close()


def wait_for_topic(topic: str, at_least: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while topic_size(topic) < at_least:
        assert time.time() < deadline, f"{topic} did not reach {at_least} messages in {timeout}s"
        time.sleep(1)


def generate(*args: str, seed: int = 1) -> str:
    out = subprocess.run(
        [str(FLOE_BIN), "generate", "--seed", str(seed), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def config_with_plugins(run: Run, plugins_toml: str) -> Path:
    """A copy of config/local.toml whose [plugins] section is `plugins_toml`; returns its path."""
    base = CONFIG.read_text().split("\n[plugins]")[0]
    path = LOGS / f"{run.name}-{run.suffix}.toml"
    LOGS.mkdir(parents=True, exist_ok=True)
    path.write_text(base + "\n" + plugins_toml)
    return path


def local_plugins_section() -> str:
    """The [plugins] section of config/local.toml (validator and enricher)."""
    return "[plugins]" + CONFIG.read_text().split("\n[plugins]", 1)[1]


def dlq_messages(run: Run, stage: str, expect: int, timeout: float = 30) -> list:
    """This run's dead-letter messages of `stage`, waiting for `expect` of them."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": KAFKA, "group.id": f"check-{run.suffix}-{stage}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([run.dlq])
    got = []
    deadline = time.time() + timeout
    while len(got) < expect and time.time() < deadline:
        m = consumer.poll(1.0)
        if m is not None and m.error() is None and dict(m.headers() or []).get("floe.stage") == stage.encode():
            got.append(m)
    # Anything more that arrives shortly after is also this stage's: the caller checks counts.
    end = time.time() + 2
    while time.time() < end:
        m = consumer.poll(0.5)
        if m is not None and m.error() is None and dict(m.headers() or []).get("floe.stage") == stage.encode():
            got.append(m)
    consumer.close()
    return got


def stack(*args: str) -> None:
    subprocess.run(["bash", str(STACK), *args], check=True, timeout=300)


# --- parity ------------------------------------------------------------------------------------

def _norm(col: str, v):
    if v is None:
        return None
    if col == "metadata":
        return json.loads(v) if isinstance(v, str) else v
    if col == "amount":
        return Decimal(v)
    if col in ("created_at", "updated_at"):
        return v.timestamp()
    return v


def source_rows(pg: psycopg.Connection, exclude: frozenset[int] = frozenset()) -> dict[int, tuple]:
    with pg.cursor() as cur:
        cur.execute(f"SELECT {', '.join(COLUMNS)} FROM transactions")
        return {
            r[0]: tuple(_norm(c, v) for c, v in zip(COLUMNS, r))
            for r in cur.fetchall()
            if r[0] not in exclude
        }


def target_rows(wh, table: str) -> tuple[dict[int, tuple], dict[int, bool], list[int]]:
    """(live rows by key, IS_DELETED by key, keys that appear more than once)."""
    cur = wh.cursor()
    cols = ", ".join(c.upper() for c in COLUMNS)
    cur.execute(f'SELECT {cols}, "IS_DELETED" FROM "{table}"')
    live: dict[int, tuple] = {}
    deleted: dict[int, bool] = {}
    seen: dict[int, int] = {}
    for r in cur.fetchall():
        key = int(r[0])
        seen[key] = seen.get(key, 0) + 1
        deleted[key] = bool(r[-1])
        if not r[-1]:
            live[key] = tuple(_norm(c, v) for c, v in zip(COLUMNS, r[:-1]))
    return live, deleted, [k for k, n in seen.items() if n > 1]


def parity_problems(pg, table: str, delete_mode: str = "soft", limit: int = 8,
                    exclude: frozenset[int] = frozenset(), port: int = FAKESNOW_PORT) -> list[str]:
    """Every way the target differs from the source (leaving out the `exclude` keys, rows the
    plugins were expected to refuse); empty when they match row for row.
    Opens its own warehouse session: the stand-in may have restarted since the test began."""
    src = source_rows(pg, exclude)
    try:
        wh = warehouse_connect(port)
        try:
            live, deleted, dups = target_rows(wh, table)
        finally:
            wh.close()
    except snowflake.connector.errors.Error as e:
        return [f"target not readable: {e}"]
    problems = [f"key {k} appears more than once in the target" for k in dups[:limit]]
    missing = sorted(set(src) - set(live))
    extra = sorted(set(live) - set(src))
    problems += [f"key {k} is in the source but not live in the target" for k in missing[:limit]]
    problems += [f"key {k} is live in the target but not in the source" for k in extra[:limit]]
    diff = 0
    for k in sorted(set(src) & set(live)):
        if src[k] != live[k]:
            diff += 1
            if diff <= limit:
                cols = [c for c, a, b in zip(COLUMNS, src[k], live[k]) if a != b]
                problems.append(
                    f"key {k} differs in {cols}: source={[src[k][COLUMNS.index(c)] for c in cols]!r:.300} "
                    f"target={[live[k][COLUMNS.index(c)] for c in cols]!r:.300}"
                )
    if delete_mode == "hard":
        gone = [k for k, d in deleted.items() if d]
        problems += [f"key {k} is marked deleted but hard deletes should remove it" for k in gone[:limit]]
    if len(missing) > limit or len(extra) > limit or diff > limit:
        problems.append(f"({len(missing)} missing, {len(extra)} extra, {diff} different in all)")
    return problems


def wait_for_parity(pg, table: str, delete_mode: str = "soft", timeout: float = 120,
                    exclude: frozenset[int] = frozenset(), port: int = FAKESNOW_PORT) -> list[str]:
    deadline = time.time() + timeout
    while True:
        problems = parity_problems(pg, table, delete_mode, exclude=exclude, port=port)
        if not problems or time.time() > deadline:
            return problems
        time.sleep(2)


def stats_line(output: str) -> str:
    lines = [l for l in output.splitlines() if "floe stopped" in l or "floe::stats" in l]
    return lines[-1] if lines else ""


# --- connectors, databases and the stand-in's switches ------------------------------------------

CONNECT = "http://127.0.0.1:8083"
REGISTRY = "http://127.0.0.1:8081"


def connect_request(method: str, path: str, body: dict | None = None) -> dict:
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        CONNECT + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        text = resp.read()
    return json.loads(text) if text else {}


def connector_config(base: str, **overrides: str) -> dict:
    """The config of docker/<base>.json pointed at the local stack, with `overrides`."""
    config = json.loads((ROOT / "docker" / f"{base}.json").read_text())["config"]
    config.update({"database.hostname": "127.0.0.1", "database.port": "5433"})
    for k, v in list(config.items()):
        if k.endswith("apicurio.registry.url"):
            config[k] = v.replace("http://schema-registry:8081", REGISTRY)
    config.update(overrides)
    return config


def start_connector(name: str, config: dict, timeout: float = 120) -> None:
    """Registers a connector and waits until it and its task run."""
    connect_request("PUT", f"/connectors/{name}/config", config)
    deadline = time.time() + timeout
    while True:
        try:
            s = connect_request("GET", f"/connectors/{name}/status")
            if s["connector"]["state"] == "RUNNING" and s["tasks"] and all(
                t["state"] == "RUNNING" for t in s["tasks"]
            ):
                return
        except Exception:
            pass
        assert time.time() < deadline, f"connector {name} did not start"
        time.sleep(1)


def stop_connector(name: str) -> None:
    try:
        connect_request("DELETE", f"/connectors/{name}")
    except Exception:
        pass


def pg_database(name: str) -> psycopg.Connection:
    """A connection to database `name` on the local PostgreSQL, created if missing."""
    with pg_connect() as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            admin.execute(f'CREATE DATABASE "{name}"')
    return psycopg.connect(PG_DSN.replace("dbname=postgres", f"dbname={name}"), autocommit=True)


def drop_slots(conn: psycopg.Connection, prefix: str) -> None:
    """Drops the inactive replication slots whose names start with `prefix`."""
    for (slot,) in conn.execute(
        "SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE %s AND NOT active", (prefix + "%",)
    ).fetchall():
        conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))


def warehouse_schema(name: str) -> None:
    """Creates a Snowflake schema in the stand-in, for one run's tables."""
    wh = warehouse_connect()
    try:
        wh.cursor().execute(f'CREATE SCHEMA IF NOT EXISTS CDC_WAREHOUSE."{name}"')
    finally:
        wh.close()


def warehouse_query(sql: str, params: list | None = None, schema: str = "PUBLIC",
                    port: int = FAKESNOW_PORT) -> list[tuple]:
    wh = snowflake.connector.connect(
        user="floe", password="test", account="local", host="127.0.0.1", port=port,
        protocol="http", database="CDC_WAREHOUSE", schema=schema,
        session_parameters={"TIMEZONE": "UTC"}, paramstyle="qmark", network_timeout=30, login_timeout=30,
    )
    try:
        cur = wh.cursor()
        cur.execute(sql, params or [])
        return cur.fetchall()
    finally:
        wh.close()


def stand_in_faults(method: str = "GET", **spec) -> dict:
    """The stand-in's fault switch (stack/fakesnow_server.py): POST arms the next `count`
    statements (or logins) to fail with `code` or `http_status`; DELETE clears."""
    import urllib.request

    req = urllib.request.Request(
        f"http://127.0.0.1:{FAKESNOW_PORT}/floe-test/faults", method=method,
        data=json.dumps(spec).encode() if method == "POST" else None,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def dlq_all(topic: str, timeout: float = 10) -> list:
    """Every message of a dead-letter topic (waits until nothing new came for 3 s)."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": KAFKA, "group.id": f"dlq-all-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    got, quiet_since, deadline = [], time.time(), time.time() + timeout + 60
    while time.time() - quiet_since < 3 and time.time() < deadline:
        m = consumer.poll(1.0)
        if m is not None and m.error() is None:
            got.append(m)
            quiet_since = time.time()
    consumer.close()
    return got


def headers(m) -> dict[str, str]:
    return {k: (v or b"").decode(errors="replace") for k, v in (m.headers() or [])}


class SlowWarehouse:
    """A second Snowflake stand-in of its own (own port, own data), answering every statement
    after `latency_ms`, as a real warehouse does: floe is pointed at it with `env`."""

    def __init__(self, latency_ms: int = 300):
        import socket
        import tempfile

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.data = tempfile.mkdtemp(prefix="floe-slow-warehouse-")
        self.latency_ms = latency_ms
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log = open(LOGS / f"slow-warehouse-{self.port}.log", "ab")
        self.start()

    def start(self) -> None:
        """Starts the server (again, after `halt`: same port, same data)."""
        self.proc = subprocess.Popen(
            [str(Path(os.environ.get("FLOE_CACHE", ROOT / ".cache")) / "venv" / "bin" / "python"),
             str(ROOT / "stack" / "fakesnow_server.py"), "--port", str(self.port),
             "--db-path", self.data, "--latency-ms", str(self.latency_ms)],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 60
        while True:
            try:
                warehouse_query("SELECT 1", port=self.port)
                break
            except Exception:
                assert self.proc.poll() is None and time.time() < deadline, "the slow stand-in did not start"
                time.sleep(0.5)

    @property
    def env(self) -> dict[str, str]:
        return {"FLOE__SNOWFLAKE__ENDPOINT": f"http://127.0.0.1:{self.port}"}

    def schema(self, name: str) -> None:
        warehouse_query(f'CREATE SCHEMA IF NOT EXISTS CDC_WAREHOUSE."{name}"', port=self.port)

    def halt(self) -> None:
        """Stops the server, keeping its data (an outage)."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def stop(self) -> None:
        import shutil

        self.halt()
        shutil.rmtree(self.data, ignore_errors=True)
