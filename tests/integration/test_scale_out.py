"""Scale-out under faults (issue 12): three floe processes of one consumer group read a
multi-table workload on three-partition topics while processes join, leave and are killed.

- tables keyed on a uuid, on a mixed-case composite (text, int) key, on a (date, int) key created
  while the run goes on, and one without a primary key (loaded append-only);
- rows already there when the connector starts, and writes during its snapshot;
- about 3,000 change events/s while: floe 3 joins, floe 2 is SIGKILLed and restarted, floe 3 is
  stopped (SIGTERM), and a newly captured table appears;
- the validator (with unique-in-batch on the key) refuses the rows that are really invalid.

Afterwards every keyed table equals its source row for row and value for value, the append-only
table holds each change once (no (partition, offset) twice), the rejects are exactly the invalid
rows, and every live process reports lag=0 within 30 s of the workload's end."""

from __future__ import annotations

import datetime as dt
import random
import re
import threading
import time
import uuid
from collections import Counter
from decimal import Decimal

import pytest

from harness import (
    Floe, Run, config_with_plugins, connector_config, drop_slots, pg_database, start_connector,
    stop_connector, warehouse_query, warehouse_schema,
)

DB = "floe_scale"
WORKLOAD_SECS = 30
EVENTS_PER_SEC = 3000  # over WRITERS connections
WRITERS = 2

PLUGINS = """
[plugins]
on_fault = "dead-letter"

[[plugins.chain]]
path = "plugins/dist/validator.wasm"
tables = ["public.accounts"]
[plugins.chain.config]
rules = [
  { column = "id", check = "unique-in-batch" },
  { column = "owner", check = "regex", pattern = "^[a-z]+[0-9]*$" },
]
"""

# table -> (key columns, compared columns), as PostgreSQL names them.
TABLES = {
    "accounts": (["id"], ["id", "owner", "balance", "opened"]),
    "Ledger": (["Book", "Line"], ["Book", "Line", "amount", "memo"]),
    "late": (["day", "n"], ["day", "n", "v"]),
    "clicks": ([], ["account", "url", "at"]),
}


def create(pg) -> None:
    pg.execute("DROP TABLE IF EXISTS accounts, \"Ledger\", clicks, late")
    pg.execute("""CREATE TABLE accounts (id uuid PRIMARY KEY, owner text NOT NULL,
                  balance numeric(12,2), opened date)""")
    pg.execute("""CREATE TABLE "Ledger" ("Book" text, "Line" int, amount numeric(10,2), memo text,
                  PRIMARY KEY ("Book", "Line"))""")
    pg.execute("CREATE TABLE clicks (account uuid, url text, at timestamptz)")


def norm(v):
    if isinstance(v, dt.datetime):
        return round(v.timestamp(), 6)
    if isinstance(v, Decimal):
        return str(v.normalize())
    if isinstance(v, (uuid.UUID, dt.date)):
        return str(v)
    return v


class Workload(threading.Thread):
    """One of WRITERS connections writing EVENTS_PER_SEC / WRITERS change events/s for
    WORKLOAD_SECS in small transactions; `invalid` collects the ids of accounts the validator
    must refuse (never touched again). Writer 0 also creates the late table and writes to it."""

    def __init__(self, seed: int, writer: int):
        super().__init__(daemon=True)
        self.rnd = random.Random(seed * 10 + writer)
        self.writer = writer
        self.books = [f"{b} {writer}" for b in ("Main", "O'Brien & Co", "Ünïcode ✓", "main")]
        self.invalid: set[str] = set()
        self.accounts: list[str] = []
        self.lines: dict[str, int] = {}
        self.late_after = WORKLOAD_SECS * 0.55
        self.events = 0
        self.error: BaseException | None = None
        self.ended_at = 0.0

    def seed(self, pg, n: int) -> None:
        """Rows there before the connector starts (read by its snapshot)."""
        for _ in range(n):
            self.new_account(pg)

    def new_account(self, cur) -> None:
        i = uuid.UUID(int=self.rnd.getrandbits(128))
        bad = self.rnd.random() < 0.03
        owner = f"Bad Owner {len(self.invalid)}" if bad else f"owner{self.rnd.randint(0, 999)}"
        cur.execute("INSERT INTO accounts VALUES (%s, %s, %s, %s)",
                    (i, owner, Decimal(self.rnd.randint(0, 10**7)) / 100, dt.date(2020, 1, 1) + dt.timedelta(self.rnd.randint(0, 2000))))
        if bad:
            self.invalid.add(str(i))
        else:
            self.accounts.append(str(i))

    def step(self, pg, late: bool) -> int:
        """One transaction; returns the change events it makes."""
        events = 0
        with pg.transaction(), pg.cursor() as cur:
            for _ in range(4):
                self.new_account(cur)
            events += 4
            picked = self.rnd.sample(self.accounts, min(6, len(self.accounts)))
            cur.execute("UPDATE accounts SET balance = balance + 1 WHERE id = ANY(%s::uuid[])", (picked,))
            events += len(picked)
            if self.rnd.random() < 0.3 and len(self.accounts) > 50:
                gone = self.accounts.pop(self.rnd.randrange(len(self.accounts)))
                cur.execute("DELETE FROM accounts WHERE id = %s", (gone,))
                events += 1
            book = self.rnd.choice(self.books)
            line = self.lines.get(book, 0) + 1
            self.lines[book] = line + 2
            cur.execute('INSERT INTO "Ledger" VALUES (%s, %s, %s, %s), (%s, %s, %s, %s), (%s, %s, %s, %s)',
                        (book, line, Decimal("1.50"), "a", book, line + 1, Decimal("-2.25"), None,
                         book, line + 2, Decimal("0.01"), "c"))
            cur.execute('UPDATE "Ledger" SET memo = %s WHERE "Book" = %s AND "Line" = %s', ("edited", book, line))
            if line % 5 == 1:
                cur.execute('DELETE FROM "Ledger" WHERE "Book" = %s AND "Line" = %s', (book, line + 1))
                events += 1
            events += 4
            clicks = [(self.rnd.choice(self.accounts), f"/p/{self.rnd.randint(1, 300)}",
                       dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=self.rnd.getrandbits(40)))
                      for _ in range(12)]
            cur.execute("INSERT INTO clicks VALUES " + ", ".join(["(%s, %s, %s)"] * len(clicks)),
                        [v for c in clicks for v in c])
            events += len(clicks)
            if late:
                day = dt.date(2024, 1, 1) + dt.timedelta(self.rnd.randint(0, 30))
                cur.execute("INSERT INTO late VALUES (%s, %s, %s) ON CONFLICT (day, n) DO UPDATE SET v = excluded.v || '+'",
                            (day, self.rnd.randint(0, 20), "v"))
                events += 1
        return events

    def run(self) -> None:
        try:
            pg = pg_database(DB)
            start, late = time.time(), False
            while time.time() - start < WORKLOAD_SECS:
                if self.writer == 0 and not late and time.time() - start > self.late_after:
                    # A table captured while the run goes on (the publication is FOR ALL TABLES).
                    pg.execute("CREATE TABLE late (day date, n int, v text, PRIMARY KEY (day, n))")
                    late = True
                self.events += self.step(pg, late)
                ahead = self.events / (EVENTS_PER_SEC / WRITERS) - (time.time() - start)
                if ahead > 0:
                    time.sleep(ahead)
            pg.close()
        except BaseException as e:  # reported by the test
            self.error = e
        finally:
            self.ended_at = time.time()


@pytest.fixture
def scale():
    pg = pg_database(DB)
    suffix = uuid.uuid4().hex[:6]
    name = f"scale-{suffix}"
    try:
        drop_slots(pg, "scale_")
        create(pg)
        yield pg, suffix, name
    finally:
        stop_connector(name)
        time.sleep(2)
        drop_slots(pg, "scale_")
        pg.close()


def source_rows(pg, table: str, invalid: set[str]) -> list[tuple]:
    cols = ", ".join(f'"{c}"' for c in TABLES[table][1])
    rows = [tuple(norm(v) for v in r) for r in pg.execute(f'SELECT {cols} FROM "{table}"').fetchall()]
    if table == "accounts":
        rows = [r for r in rows if r[0] not in invalid]
    return rows


def target_rows(schema: str, table: str) -> list[tuple] | None:
    cols = ", ".join(f'"{c.upper()}"' for c in TABLES[table][1])
    where = ' WHERE NOT "IS_DELETED"' if TABLES[table][0] else ""
    try:
        rows = warehouse_query(f'SELECT {cols} FROM "{table.upper()}"{where}', schema=schema)
    except Exception:
        return None  # not created yet
    return [tuple(norm(v) for v in r) for r in rows]


def problems(pg, schema: str, invalid: set[str]) -> list[str]:
    out = []
    for table, (key, _) in TABLES.items():
        src, dst = source_rows(pg, table, invalid), target_rows(schema, table)
        if dst is None:
            out.append(f"{table.upper()} does not exist yet")
            continue
        if key:
            n = len(key)
            want, got = {r[:n]: r for r in src}, {r[:n]: r for r in dst}
            if len(got) != len(dst):
                out.append(f"{table.upper()}: duplicate keys")
            if want != got:
                diff = set(want.items()) ^ set(got.items())
                out.append(f"{table.upper()}: {len(diff)} rows differ, e.g. {sorted(diff, key=str)[:2]}")
        elif Counter(src) != Counter(dst):
            out.append(f"{table.upper()} (append-only): {sum((Counter(src) - Counter(dst)).values())} missing, "
                       f"{sum((Counter(dst) - Counter(src)).values())} extra")
    return out


def last_lag(floe: Floe) -> int | None:
    lags = re.findall(r"\blag=(\d+|\?)", floe.output())
    return int(lags[-1]) if lags and lags[-1] != "?" else None


def test_three_processes_join_leave_and_crash_under_load(scale):
    pg, suffix, name = scale
    run = Run(f"scale_{suffix}")
    schema = f"SCALE_{suffix.upper()}"
    warehouse_schema(schema)
    writers = [Workload(seed=int(suffix, 16), writer=w) for w in range(WRITERS)]
    writers[0].seed(pg, 300)
    config = config_with_plugins(run, PLUGINS)
    env = dict(FLOE__KAFKA__TOPICS=f'["^scale{suffix}\\\\..*"]', FLOE__SNOWFLAKE__TABLE="",
               FLOE__SNOWFLAKE__SCHEMA=schema, FLOE__BATCH__MAX_RECORDS="100",
               FLOE__BATCH__MAX_WAIT_MS="1000",
               # Dynamic members: a static member killed in the middle of a cooperative rebalance
               # leaves the partitions it was to give up unassigned until the group's next
               # rebalance (see the README's "Running several processes").
               **{"FLOE__KAFKA__CONSUMER_PROPERTIES__GROUP.INSTANCE.ID": ""})

    def start(member: int) -> Floe:
        return Floe(run, config=config, member=member, **env)

    floes = {1: start(1), 2: start(2)}
    try:
        time.sleep(5)
        start_connector(name, connector_config(
            "transaction_connector", **{
                "database.dbname": DB, "topic.prefix": f"scale{suffix}",
                "slot.name": f"scale_{suffix}", "publication.name": f"scale_{suffix}",
                "publication.autocreate.mode": "all_tables", "table.include.list": "public\\..*",
                "slot.drop.on.stop": "true",
                "topic.creation.default.partitions": "3", "topic.creation.default.replication.factor": "1",
            }))
        for w in writers:
            w.start()  # while the snapshot reads the seeded rows
        started = time.time()

        def at(secs: float) -> None:
            time.sleep(max(0.0, started + secs - time.time()))

        at(5)
        floes[3] = start(3)  # joins
        at(10)
        floes[2].kill9()
        at(13)
        floes[2] = start(2)  # back under its static member id
        at(22)
        assert floes[3].stop() == 0, floes[3].output()[-2000:]  # leaves
        floes.pop(3)
        for w in writers:
            w.join(WORKLOAD_SECS + 60)
            assert w.error is None, w.error
        events, ended = sum(w.events for w in writers), max(w.ended_at for w in writers)
        invalid = set().union(*(w.invalid for w in writers))
        print(f"workload: {events} change events, {events / (ended - started):.0f}/s")

        # Every live process reports lag=0 within 30 s of the workload's end.
        deadline = ended + 30
        while not all(last_lag(f) == 0 for f in floes.values()):
            assert time.time() < deadline, (
                f"lag not back to 0 within 30 s of the workload's end: "
                f"{ {m: last_lag(f) for m, f in floes.items()} }; logs: {[f.log_path for f in floes.values()]}")
            time.sleep(1)
        print(f"lag=0 everywhere {time.time() - ended:.1f} s after the workload ended")

        deadline = time.time() + 180
        while True:
            found = problems(pg, schema, invalid)
            if not found or time.time() > deadline:
                break
            time.sleep(3)
        assert not found, "\n".join(found) + f"\nlogs: {[f.log_path for f in floes.values()]}"

        # The append-only table: each change once, by its Kafka position.
        twice = warehouse_query(
            'SELECT "CDC_KAFKA_PARTITION", "CDC_KAFKA_OFFSET", COUNT(*) FROM "CLICKS" '
            'GROUP BY 1, 2 HAVING COUNT(*) > 1', schema=schema)
        assert not twice, f"(partition, offset) loaded twice: {twice[:5]}"
        partitions = warehouse_query('SELECT COUNT(DISTINCT "CDC_KAFKA_PARTITION") FROM "CLICKS"', schema=schema)
        assert partitions[0][0] == 3, f"the append-only topic was not spread over 3 partitions: {partitions}"

        # Rejects: exactly the invalid rows (re-delivered inserts are not refused as duplicates).
        rejected = [r[0] for r in warehouse_query('SELECT "RECORD_KEY" FROM "ACCOUNTS_REJECTS"', schema=schema)]
        ids = Counter(m.group(0) for k in rejected for m in [re.search(r"[0-9a-f]{8}-[0-9a-f-]{27}", k or "")] if m)
        assert set(ids) == invalid, (
            f"rejects: {len(ids)} keys for {len(invalid)} invalid rows; "
            f"wrongly refused: {sorted(set(ids) - invalid)[:3]}; missing: {sorted(invalid - set(ids))[:3]}")
        assert max(ids.values()) == 1, f"rows refused twice: {[k for k, n in ids.items() if n > 1][:3]}"
    finally:
        for f in floes.values():
            if f.proc.poll() is None:
                f.stop()
