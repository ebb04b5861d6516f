"""Right on any source schema (issue 11): a zoo of tables in a database of its own, captured by
connectors of its own, loaded by floe into a Snowflake schema per run with the default naming.

- keys of every type PostgreSQL allows (numeric, date, time, timestamp, timestamptz, uuid, text
  with quotes, backslashes and emoji, bytea, boolean, enum, composite keys mixing them), each
  table twice: REPLICA IDENTITY default and full;
- rows inserted, then updated and deleted in later batches (each delete alone in its batch);
- through JSON and through Avro, with decimal.handling.mode precise, string and double;
- names that collide: columns named like floe's own (the table is refused, its records go to the
  dead-letter topic with the reason, every other table loads), a mixed-case table, the same
  table name in two schemas (both load, apart), a table named like another's rejects table
  (one of the two is refused, naming both).

Every other table must equal its source, row for row and value for value."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from decimal import Decimal

import pytest

from harness import (
    Floe, Run, SlowWarehouse, dlq_all, drop_slots, headers, pg_database, start_connector, stats_line, stop_connector,
    connector_config, warehouse_query, warehouse_schema,
)

ZOO_DB = "floe_zoo"
UTC = dt.timezone.utc

# table -> (columns DDL, key columns, four keys). Every table also has `v text`.
KEYS: dict[str, tuple[str, list[str], list[tuple]]] = {
    "k_int": ("id int", ["id"], [(1,), (2,), (3,), (4,)]),
    "k_numeric": ("id numeric(10,2), amount numeric(12,3)", ["id"],
                  [(Decimal("1.10"),), (Decimal("-2.25"),), (Decimal("12345678.99"),), (Decimal("0.01"),)]),
    "k_date": ("id date", ["id"], [(dt.date(2020, 2, 29),), (dt.date(1970, 1, 1),), (dt.date(1969, 12, 31),),
                                   (dt.date(2099, 12, 31),)]),
    "k_time": ("id time", ["id"], [(dt.time(0, 0),), (dt.time(12, 34, 56, 789000),),
                                   (dt.time(23, 59, 59, 999999),), (dt.time(6, 0, 0, 500000),)]),
    "k_ts": ("id timestamp", ["id"], [(dt.datetime(2020, 1, 1),), (dt.datetime(1999, 12, 31, 23, 59, 59, 999999),),
                                      (dt.datetime(1960, 6, 15, 12, 0, 0, 123456),), (dt.datetime(2038, 1, 19, 3, 14, 8),)]),
    "k_tstz": ("id timestamptz", ["id"], [(dt.datetime(2020, 1, 1, tzinfo=UTC),),
                                          (dt.datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),),
                                          (dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),),
                                          (dt.datetime(1965, 3, 1, 1, 2, 3, 4000, tzinfo=UTC),)]),
    "k_uuid": ("id uuid", ["id"], [(uuid.UUID(int=i * 0x1234567890ABCDEF),) for i in range(1, 5)]),
    "k_text": ("id text", ["id"], [("it's",), ("back\\slash",), ("emoji 😀 ✓",), ('quote "x" \n line',)]),
    "k_bytea": ("id bytea", ["id"], [(b"\x00\x01",), (b"\xff\xfe",), (b"",), (b"abc",)]),
    "k_bool": ("id boolean", ["id"], [(True,), (False,)]),
    "k_enum": ("id zoo_mood", ["id"], [("sad",), ("ok",), ("happy",)]),
    "k_composite": ("a int, b text, c date", ["a", "b", "c"],
                    [(1, "a", dt.date(2020, 1, 1)), (1, "b", dt.date(2020, 1, 1)), (2, "a", dt.date(2020, 1, 2)),
                     (1, "a", dt.date(2020, 1, 2))]),
    "k_mixed": ("a numeric(12,3), b timestamptz, c uuid, d bytea, e boolean", ["a", "b", "c", "d", "e"],
                [(Decimal("1.5"), dt.datetime(2021, 5, 5, tzinfo=UTC), uuid.UUID(int=7), b"\x01", True),
                 (Decimal("1.5"), dt.datetime(2021, 5, 5, tzinfo=UTC), uuid.UUID(int=7), b"\x01", False),
                 (Decimal("-0.001"), dt.datetime(1990, 1, 1, 0, 0, 0, 1, tzinfo=UTC), uuid.UUID(int=8), b"", True),
                 (Decimal("99.999"), dt.datetime(2030, 12, 31, tzinfo=UTC), uuid.UUID(int=9), b"\xff", False)]),
}
NUMERIC_TABLES = ["k_numeric", "k_mixed"]


def zoo_tables(names: list[str]) -> list[str]:
    return [t for n in names for t in (n, f"{n}_full")]


# One connector per way of capturing: JSON and Avro with precise decimals take every table; the
# other decimal modes take the tables with numeric columns.
CAPTURES = {
    "json_precise": ("transaction_connector", "precise", None),
    "avro_precise": ("transaction_connector_avro", "precise", None),
    "json_string": ("transaction_connector", "string", NUMERIC_TABLES),
    "json_double": ("transaction_connector", "double", NUMERIC_TABLES),
    "avro_string": ("transaction_connector_avro", "string", NUMERIC_TABLES),
    "avro_double": ("transaction_connector_avro", "double", NUMERIC_TABLES),
}
SPECIALS = ["public.collides", 'public."MixedCase"', "public.orders", "s2.orders", "public.rj", "public.rj_rejects"]


def create_zoo(pg) -> None:
    pg.execute("DO $$ BEGIN CREATE TYPE zoo_mood AS ENUM ('sad', 'ok', 'happy'); "
               "EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    pg.execute("CREATE SCHEMA IF NOT EXISTS s2")
    for name, (cols, key, _) in KEYS.items():
        for table, full in ((name, False), (f"{name}_full", True)):
            pg.execute(f"DROP TABLE IF EXISTS public.{table}")
            pg.execute(f"CREATE TABLE public.{table} ({cols}, v text, PRIMARY KEY ({', '.join(key)}))")
            if full:
                pg.execute(f"ALTER TABLE public.{table} REPLICA IDENTITY FULL")
    for ddl in [
        "DROP TABLE IF EXISTS public.collides",
        "CREATE TABLE public.collides (id int PRIMARY KEY, is_deleted boolean, cdc_lsn bigint, v text)",
        'DROP TABLE IF EXISTS public."MixedCase"',
        'CREATE TABLE public."MixedCase" ("Id" int PRIMARY KEY, "Value" text)',
        "DROP TABLE IF EXISTS public.orders", "DROP TABLE IF EXISTS s2.orders",
        "CREATE TABLE public.orders (id int PRIMARY KEY, item text)",
        "CREATE TABLE s2.orders (id int PRIMARY KEY, item text)",
        "DROP TABLE IF EXISTS public.rj", "DROP TABLE IF EXISTS public.rj_rejects",
        "CREATE TABLE public.rj (id int PRIMARY KEY, v text)",
        "CREATE TABLE public.rj_rejects (id int PRIMARY KEY, v text)",
    ]:
        pg.execute(ddl)


def workload(pg) -> None:
    """Inserts, then updates, then deletes, each phase in later batches than the one before (the
    runs close a batch after 500 ms); each delete is alone in its batch."""
    for name, (_, key, keys) in KEYS.items():
        for table in (name, f"{name}_full"):
            extra = ", amount" if name == "k_numeric" else ""
            for i, k in enumerate(keys):
                vals = list(k) + ([Decimal(f"{i}.125")] if extra else []) + [f"row {i}"]
                marks = ", ".join(["%s"] * len(vals))
                pg.execute(f"INSERT INTO public.{table} ({', '.join(key)}{extra}, v) VALUES ({marks})", vals)
    for i in range(1, 5):
        pg.execute("INSERT INTO public.collides VALUES (%s, false, %s, 'x')", (i, i * 10))
        pg.execute('INSERT INTO public."MixedCase" VALUES (%s, %s)', (i, f"Mixed {i}"))
        pg.execute("INSERT INTO public.orders VALUES (%s, %s)", (i, f"public item {i}"))
        pg.execute("INSERT INTO s2.orders VALUES (%s, %s)", (i, f"s2 item {i}"))
        pg.execute("INSERT INTO public.rj VALUES (%s, 'rj')", (i,))
        pg.execute("INSERT INTO public.rj_rejects VALUES (%s, 'rj_rejects')", (i,))
    time.sleep(3)
    for name, (_, key, keys) in KEYS.items():
        where = " AND ".join(f"{k} = %s" for k in key)
        for table in (name, f"{name}_full"):
            for k in keys[:2] if len(keys) > 2 else keys[:1]:
                pg.execute(f"UPDATE public.{table} SET v = 'updated' WHERE {where}", list(k))
            if name == "k_numeric":
                pg.execute(f"UPDATE public.{table} SET amount = amount * 3 WHERE {where}", list(keys[0]))
    pg.execute("UPDATE public.orders SET item = 'changed' WHERE id = 1")
    pg.execute("UPDATE s2.orders SET item = 'changed in s2' WHERE id = 2")
    pg.execute('UPDATE public."MixedCase" SET "Value" = \'changed\' WHERE "Id" = 3')
    time.sleep(3)
    for victim in (2, 3):
        for name, (_, key, keys) in KEYS.items():
            if victim >= len(keys):
                continue
            where = " AND ".join(f"{k} = %s" for k in key)
            for table in (name, f"{name}_full"):
                pg.execute(f"DELETE FROM public.{table} WHERE {where}", list(keys[victim]))
        pg.execute("DELETE FROM public.orders WHERE id = %s", (victim,))
        pg.execute('DELETE FROM public."MixedCase" WHERE "Id" = %s', (victim,))
        time.sleep(2)
    pg.execute("DELETE FROM public.k_bool WHERE id = false")
    pg.execute("DELETE FROM public.k_bool_full WHERE id = false")


def norm(v, numeric: bool):
    if v is None:
        return None
    if numeric:
        return Decimal(str(v)).normalize()
    if isinstance(v, bool):
        return v
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if isinstance(v, dt.datetime):
        return v.astimezone(UTC).isoformat() if v.tzinfo else v.isoformat()
    if isinstance(v, (dt.date, dt.time)):
        return v.isoformat()
    return str(v)


def columns_of(pg, schema: str, table: str) -> list[tuple[str, bool]]:
    rows = pg.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position", (schema, table),
    ).fetchall()
    return [(c, t == "numeric") for c, t in rows]


def compare(pg, wh_schema: str, schema: str, table: str, target: str, port: int | None = None) -> list[str]:
    cols = columns_of(pg, schema, table)
    src = {tuple(norm(v, n) for v, (_, n) in zip(r, cols))
           for r in pg.execute(f'SELECT {", ".join(chr(34) + c + chr(34) for c, _ in cols)} FROM {schema}."{table}"').fetchall()}
    try:
        rows = warehouse_query(
            f'SELECT {", ".join(chr(34) + c.upper() + chr(34) for c, _ in cols)}, "IS_DELETED" FROM "{target}"',
            schema=wh_schema, **({"port": port} if port else {}),
        )
    except Exception as e:  # not created yet
        return [f"{target}: not readable ({str(e)[:120]})"]
    live = {tuple(norm(v, n) for v, (_, n) in zip(r[:-1], cols)) for r in rows if not r[-1]}
    if src == live:
        return []
    return [f"{wh_schema}.{target}: missing {sorted(map(str, src - live))[:3]} extra {sorted(map(str, live - src))[:3]}"]


@pytest.fixture(scope="module")
def zoo():
    pg = pg_database(ZOO_DB)
    suffix = uuid.uuid4().hex[:6]
    names = {}
    try:
        drop_slots(pg, "zoo_")
        create_zoo(pg)
        for capture, (base, decimals, only) in CAPTURES.items():
            tables = zoo_tables(NUMERIC_TABLES if only else list(KEYS)) + ([] if only else SPECIALS)
            include = ",".join(t.replace('"', "").replace(".", "\\.") if "." in t else f"public\\.{t}" for t in tables)
            name = f"zoo-{capture}-{suffix}"
            config = connector_config(
                base, **{
                    "database.dbname": ZOO_DB, "topic.prefix": f"zoo{suffix}{capture.replace('_', '')}",
                    "slot.name": f"zoo_{capture}_{suffix}", "publication.name": f"zoo_{capture}_{suffix}",
                    "table.include.list": include, "decimal.handling.mode": decimals,
                    "slot.drop.on.stop": "true",
                },
            )
            start_connector(name, config)
            names[capture] = (name, config["topic.prefix"])
        yield pg, names
    finally:
        for name, _ in names.values():
            stop_connector(name)
        time.sleep(2)
        drop_slots(pg, "zoo_")
        pg.close()


def test_every_key_type_and_colliding_names_through_json_and_avro(zoo):
    """Each capture into its own Snowflake schema. Two of them vary what past bugs hid behind:
    Avro with precise decimals is loaded by two floe processes of one consumer group, JSON with
    string decimals into a stand-in that takes 300 ms per statement."""
    pg, captures = zoo
    slow = SlowWarehouse(latency_ms=300)
    runs = {}
    try:
        for capture, (_, prefix) in captures.items():
            run = Run(f"zoo_{capture}")
            schema = f"ZOO_{capture.upper()}_{run.suffix.upper()}"
            port = slow.port if capture == "json_string" else None
            env = dict(FLOE__SNOWFLAKE__TABLE="", FLOE__SNOWFLAKE__SCHEMA=schema,
                       FLOE__KAFKA__TOPICS=f'["^{prefix}\\\\..*"]')
            if port:
                slow.schema(schema)
                env.update(slow.env)
            else:
                warehouse_schema(schema)
            floes = [Floe(run, **env)]
            if capture == "avro_precise":
                floes.append(Floe(run, member=2, **env))
            runs[capture] = (run, schema, floes, port)
        time.sleep(8)  # every floe subscribed and the snapshots (empty tables) done
        workload(pg)
        deadline = time.time() + 300
        while True:
            problems = []
            for capture, (run, schema, floes, port) in runs.items():
                only = CAPTURES[capture][2]
                for table in zoo_tables(NUMERIC_TABLES if only else list(KEYS)):
                    problems += compare(pg, schema, "public", table, table.upper(), port)
                if not only:
                    problems += compare(pg, schema, "public", "MixedCase", "MIXEDCASE", port)
                    problems += compare(pg, schema, "public", "orders", "ORDERS", port)
                    problems += compare(pg, schema, "s2", "orders", "S2_ORDERS", port)
            if not problems or time.time() > deadline:
                break
            time.sleep(3)
        assert not problems, "\n".join(problems[:30])
    finally:
        for run, schema, floes, port in runs.values():
            for floe in floes:
                assert floe.stop() == 0, floe.output()[-3000:]
        slow.stop()

    for capture, (run, schema, floes, port) in runs.items():
        letters = dlq_all(run.dlq)
        by_table: dict[str, list] = {}
        for m in letters:
            by_table.setdefault(headers(m)["floe.source.topic"].rsplit(".", 1)[-1], []).append(m)
        if CAPTURES[capture][2]:
            assert not letters, f"{capture}: nothing may be dead-lettered: {[headers(m) for m in letters][:3]}"
            continue
        # Nothing good was dead-lettered: only the refused tables' records.
        assert set(by_table) <= {"collides", "rj", "rj_rejects"}, (capture, set(by_table))
        reasons = {headers(m)["floe.reason"] for m in by_table.get("collides", [])}
        assert by_table.get("collides") and all("snowflake.columns.is_deleted" in r for r in reasons), (capture, reasons)
        # A table named like another's rejects table: exactly one of the two loads.
        refused = [t for t in ("rj", "rj_rejects") if t in by_table]
        assert len(refused) == 1, (capture, refused)
        reason = headers(by_table[refused[0]][0])["floe.reason"]
        assert "public.rj" in reason and "public.rj_rejects" in reason and "already loads into" in reason, reason
        loaded = "rj_rejects" if refused == ["rj"] else "rj"
        assert not compare(pg, schema, "public", loaded, loaded.upper())
        # The process that owns the refused table names it in its stats line.
        assert any("COLLIDES" in stats_line(f.output()) for f in floes), [stats_line(f.output()) for f in floes]
        # Deleted rows stay, marked deleted, with their key (a delete alone in its batch applied).
        deleted = warehouse_query('SELECT COUNT(*) FROM "K_DATE" WHERE "IS_DELETED"', schema=schema)[0][0]
        assert deleted == 2, (capture, deleted)
    assert len(runs["avro_precise"][2]) == 2


def zoo_capture(run: Run, tag: str, tables: list[str], base: str = "transaction_connector") -> tuple[str, str, str]:
    """A connector of its own on zoo tables (`public.<table>`), and a Snowflake schema for the
    run: returns (connector name, topic prefix, Snowflake schema)."""
    name, prefix = f"zoo-{tag}-{run.suffix}", f"zoo{tag}{run.suffix}"
    schema = f"ZOO_{tag.upper()}_{run.suffix.upper()}"
    warehouse_schema(schema)
    start_connector(name, connector_config(
        base, **{
            "database.dbname": ZOO_DB, "topic.prefix": prefix, "slot.name": f"zoo_{tag}_{run.suffix}",
            "publication.name": f"zoo_{tag}_{run.suffix}",
            "table.include.list": ",".join(f"public\\.{t}" for t in tables), "slot.drop.on.stop": "true",
        },
    ))
    return name, prefix, schema


def test_writes_during_the_snapshot():
    """A 100,000-row table is snapshotted while a workload updates and deletes its rows; some of
    those transactions begin before the snapshot and commit after it, so their changes have a
    lower LSN than the snapshot's reads. The warehouse must still end equal to the source."""
    import random
    import threading

    pg = pg_database(ZOO_DB)
    run = Run("snapshot_writes")
    table = f"snapload_{run.suffix}"
    pg.execute(f"CREATE TABLE public.{table} (id int PRIMARY KEY, n int NOT NULL, note text)")
    pg.execute(f"INSERT INTO public.{table} SELECT g, 0, repeat('x', 100) FROM generate_series(1, 100000) g")
    stop = threading.Event()
    errors: list[str] = []

    def writer(seed: int) -> None:
        rnd = random.Random(seed)
        try:
            with pg_database(ZOO_DB) as conn:
                conn.autocommit = False
                while not stop.is_set():
                    with conn.transaction():
                        for _ in range(3):
                            k = rnd.randint(1, 100000)
                            if rnd.random() < 0.1:
                                conn.execute(f"DELETE FROM public.{table} WHERE id = %s", (k,))
                            else:
                                conn.execute(f"UPDATE public.{table} SET n = n + 1 WHERE id = %s", (k,))
                        # Held open a while, so some begin before the snapshot and end after it.
                        time.sleep(rnd.random() * 0.05)
        except Exception as e:  # noqa: BLE001 - reported by the test
            errors.append(repr(e))

    writers = [threading.Thread(target=writer, args=(i,)) for i in range(3)]
    for w in writers:
        w.start()
    time.sleep(1)
    name, prefix, schema = zoo_capture(run, "snap", [table])
    floe = Floe(run, FLOE__SNOWFLAKE__TABLE="", FLOE__SNOWFLAKE__SCHEMA=schema,
                FLOE__KAFKA__TOPICS=f'["{prefix}.public.{table}"]', FLOE__BATCH__MAX_RECORDS="5000")
    try:
        # Keep writing until the snapshot is read whole, then a little more.
        deadline = time.time() + 300
        while time.time() < deadline:
            rows = warehouse_query(f'SELECT COUNT(*) FROM "{table.upper()}"', schema=schema) if _exists(schema, table) else [(0,)]
            if rows[0][0] >= 90000:
                break
            time.sleep(2)
        time.sleep(3)
        stop.set()
        for w in writers:
            w.join()
        assert not errors, errors
        deadline = time.time() + 240
        while True:
            problems = compare(pg, schema, "public", table, table.upper())
            if not problems or time.time() > deadline:
                break
            time.sleep(3)
        assert not problems, problems
    finally:
        stop.set()
        assert floe.stop() == 0, floe.output()[-3000:]
        stop_connector(name)
        pg.close()


def _exists(schema: str, table: str) -> bool:
    rows = warehouse_query(
        "SELECT COUNT(*) FROM CDC_WAREHOUSE.INFORMATION_SCHEMA.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
        [schema, table.upper()],
    )
    return rows[0][0] > 0


def test_truncate_survives_kill_restart_and_a_replay_from_the_beginning():
    """A source TRUNCATE between two waves of writes, floe SIGKILLed and restarted along the way
    (against a warehouse taking 300 ms per statement),
    then every topic replayed from the beginning by a new consumer group into the same tables:
    the rows from before the truncate stay deleted, the rows after it stay live."""
    pg = pg_database(ZOO_DB)
    run = Run("truncate_replay")
    table = f"trunc_{run.suffix}"
    # A text key: the partitions of the topic interleave, so a partition can lag behind the one
    # that carries the truncate.
    pg.execute(f"CREATE TABLE public.{table} (code text PRIMARY KEY, n int)")
    name, prefix, schema = zoo_capture(run, "trunc", [table])
    # A warehouse that takes 300 ms per statement: kills land in the middle of loads.
    slow = SlowWarehouse(latency_ms=300)
    slow.schema(schema)
    env = dict(FLOE__SNOWFLAKE__TABLE="", FLOE__SNOWFLAKE__SCHEMA=schema,
               FLOE__KAFKA__TOPICS=f'["{prefix}.public.{table}"]', FLOE__SNOWFLAKE__TRUNCATE="apply",
               **slow.env)
    try:
        floe = Floe(run, **env)
        for i in range(300):
            pg.execute(f"INSERT INTO public.{table} VALUES (%s, %s)", (f"before-{i}", i))
        time.sleep(2)
        floe.kill9()
        pg.execute(f"UPDATE public.{table} SET n = n + 1000 WHERE n % 3 = 0")
        pg.execute(f"TRUNCATE public.{table}")
        for i in range(200):
            pg.execute(f"INSERT INTO public.{table} VALUES (%s, %s)", (f"after-{i}", i))
        floe = Floe(run, **env)
        time.sleep(4)
        floe.kill9()
        pg.execute(f"UPDATE public.{table} SET n = -n WHERE n % 2 = 0")

        def state() -> tuple[set, set]:
            rows = warehouse_query(f'SELECT "CODE", "N", "IS_DELETED" FROM "{table.upper()}"', schema=schema,
                                   port=slow.port)
            return {(c, n) for c, n, d in rows if not d}, {c for c, n, d in rows if d}

        source = set(pg.execute(f"SELECT code, n FROM public.{table}").fetchall())
        before = {f"before-{i}" for i in range(300)}
        floe = Floe(run, **env)
        try:
            deadline = time.time() + 240
            while state()[0] != source and time.time() < deadline:
                time.sleep(2)
        finally:
            assert floe.stop() == 0, floe.output()[-3000:]
        live, deleted = state()
        assert live == source, (len(live), len(source), sorted(live - source)[:3], sorted(source - live)[:3])
        # Rows from before the truncate are marked deleted if they were loaded before the cut
        # reached floe; those whose partition was read after it are never loaded at all.
        assert deleted <= before, (len(deleted), sorted(deleted - before)[:3])
        # Everything again from the beginning, into the same tables.
        replay = Run("truncate_replay_again")
        replay.suffix = run.suffix + "r"
        again = Floe(replay, "--exit-when-idle", "6", **env)
        assert again.wait(240) == 0, again.output()[-3000:]
        assert "loaded=0 " not in stats_line(again.output()), "the replay loaded nothing"
        assert state() == (live, deleted), "the replay changed the warehouse"
    finally:
        stop_connector(name)
        slow.stop()
        pg.close()


def test_a_paused_table_waits_while_the_others_load_and_loads_once_fixed():
    """With snowflake.on_table_error = "pause", a table that cannot load holds its records
    (nothing dead-lettered, nothing of it committed) while another table loads; once the user
    renames floe's column it collided with, the held records load."""
    pg = pg_database(ZOO_DB)
    run = Run("table_pause")
    held, fine = f"held_{run.suffix}", f"fine_{run.suffix}"
    pg.execute(f"CREATE TABLE public.{held} (id uuid PRIMARY KEY, is_deleted text, v int)")
    pg.execute(f"CREATE TABLE public.{fine} (id int PRIMARY KEY, v int)")
    name, prefix, schema = zoo_capture(run, "pause", [held, fine])
    env = dict(FLOE__SNOWFLAKE__TABLE="", FLOE__SNOWFLAKE__SCHEMA=schema,
               FLOE__KAFKA__TOPICS=f'["^{prefix}\\\\..*"]', FLOE__SNOWFLAKE__ON_TABLE_ERROR="pause")
    try:
        floe = Floe(run, **env)
        time.sleep(5)
        for i in range(50):
            pg.execute(f"INSERT INTO public.{held} VALUES (%s, %s, %s)", (uuid.UUID(int=i + 1), f"no {i}", i))
            pg.execute(f"INSERT INTO public.{fine} VALUES (%s, %s)", (i, i))
        pg.execute(f"DELETE FROM public.{held} WHERE v < 5")
        pg.execute(f"UPDATE public.{fine} SET v = -v WHERE v % 2 = 0")
        try:
            deadline = time.time() + 120
            while compare(pg, schema, "public", fine, fine.upper()) and time.time() < deadline:
                time.sleep(2)
            assert not compare(pg, schema, "public", fine, fine.upper())
            time.sleep(3)
            assert not _exists(schema, held), "the held table must not load"
            out = floe.output()
            assert f"blocked={held.upper()}" in stats_line(out) or f"blocked={held.upper()}" in out, stats_line(out)
            assert "its records wait" in out
        finally:
            assert floe.stop() == 0, floe.output()[-3000:]
        assert not dlq_all(run.dlq), "a paused table dead-letters nothing"
        # The fix: floe's soft-delete column gets another name; the held records load.
        floe = Floe(run, FLOE__SNOWFLAKE__COLUMNS__IS_DELETED="FLOE_DELETED", **env)
        try:
            deadline = time.time() + 120
            while True:
                rows = (warehouse_query(f'SELECT "ID", "IS_DELETED", "V", "FLOE_DELETED" FROM "{held.upper()}"',
                                        schema=schema) if _exists(schema, held) else [])
                live = {(uuid.UUID(r[0]), r[1], r[2]) for r in rows if not r[3]}
                want = {(k, d, v) for k, d, v in pg.execute(f"SELECT id, is_deleted, v FROM public.{held}").fetchall()}
                if (live == want and len(rows) == 50) or time.time() > deadline:
                    break
                time.sleep(2)
            assert live == want and len(rows) == 50, (len(live), len(want), len(rows))
        finally:
            assert floe.stop() == 0, floe.output()[-3000:]
    finally:
        stop_connector(name)
        pg.close()
