"""Schema evolution while floe runs, through JSON and Avro at once: a column added mid-stream
under load appears in Snowflake by itself and its values load; a widened NUMERIC is widened in
Snowflake; a dropped column stays in Snowflake and new rows leave it NULL; a type change
Snowflake cannot apply sends that table's records to the dead-letter topic, and loading
resumes once the source stops sending the changed column."""

import json
import threading
import time
from decimal import Decimal

from harness import Floe, Run, dlq_messages, warehouse_connect

TOPICS = {"json": "cdc.public.evolving", "avro": "cdcavro.public.evolving"}


class Writer(threading.Thread):
    """Inserts rows into public.evolving until stopped, filling the columns `extra()` names."""

    def __init__(self, pg_dsn_conn_factory, extra):
        super().__init__(daemon=True)
        self.connect, self.extra, self.stop_flag, self.count = pg_dsn_conn_factory, extra, False, 0
        self.error = None

    def run(self):
        try:
            pg = self.connect()
            with pg.cursor() as cur:
                while not self.stop_flag:
                    cols, vals = self.extra()
                    names = ", ".join(["name", "qty", *cols])
                    marks = ", ".join(["%s"] * (2 + len(vals)))
                    cur.execute(f"INSERT INTO evolving ({names}) VALUES ({marks})",
                                (f"row {self.count}", self.count, *vals))
                    if self.count % 5 == 0:
                        cur.execute("UPDATE evolving SET qty = qty + 1000 WHERE id = (SELECT max(id) FROM evolving)")
                    self.count += 1
                    time.sleep(0.01)
            pg.close()
        except Exception as e:  # surfaced by the test
            self.error = e


def warehouse(sql: str, *args):
    wh = warehouse_connect()
    try:
        cur = wh.cursor()
        cur.execute(sql, args)
        return cur.fetchall()
    finally:
        wh.close()


def column_type(table: str, column: str):
    rows = warehouse("SELECT data_type, numeric_precision, numeric_scale FROM information_schema.columns "
                     "WHERE table_name = ? AND column_name = ?", table, column)
    return rows[0] if rows else None


def has_row(table: str, key: int) -> bool:
    try:
        return bool(warehouse(f'SELECT 1 FROM "{table}" WHERE "ID" = ?', key))
    except Exception:  # the table does not exist yet
        return False


def wait_until(check, timeout: float, what: str):
    deadline = time.time() + timeout
    while True:
        problem = check()
        if not problem:
            return
        assert time.time() < deadline, f"{what}: {problem}"
        time.sleep(2)


def test_add_widen_and_drop_columns_under_load(pg):
    from harness import pg_connect

    runs = {fmt: Run(f"evolve_{fmt}") for fmt in TOPICS}
    s = runs["json"].suffix
    amt, gone = f"amt_{s}", f"gone_{s}"
    state = {"cols": []}

    def extra():
        cols = list(state["cols"])
        vals = [Decimal("12.34") if c == amt and state.get("wide") is None else
                Decimal("123456789012.34") if c == amt else f"g{time.time()}" for c in cols]
        return cols, vals

    floes = {fmt: Floe(run, FLOE__KAFKA__TOPICS=f'["{TOPICS[fmt]}"]') for fmt, run in runs.items()}
    writer = Writer(pg_connect, extra)
    writer.start()
    try:
        time.sleep(4)
        with pg.cursor() as cur:
            cur.execute(f"ALTER TABLE evolving ADD COLUMN {amt} NUMERIC(10,2)")
            state["cols"] = [amt]
            time.sleep(4)
            cur.execute(f"ALTER TABLE evolving ALTER COLUMN {amt} TYPE NUMERIC(14,2)")
            state["wide"] = True
            time.sleep(4)
            cur.execute(f"ALTER TABLE evolving ADD COLUMN {gone} TEXT")
            state["cols"] = [amt, gone]
            time.sleep(4)
            state["cols"] = [amt]
            time.sleep(0.5)
            cur.execute(f"ALTER TABLE evolving DROP COLUMN {gone}")
            time.sleep(4)
    finally:
        writer.stop_flag = True
        writer.join(30)
    assert writer.error is None, writer.error
    assert writer.count > 500, writer.count

    with pg.cursor() as cur:
        # Rows an earlier run's incompatible change sent to the dead-letter topic stay out.
        cur.execute(f"SELECT id, name, qty, {amt} FROM evolving WHERE name IS DISTINCT FROM 'changed'")
        source = {r[0]: r[1:] for r in cur.fetchall()}
        cur.execute("SELECT count(*) FROM evolving WHERE name = 'changed'")
        changed_rows = cur.fetchone()[0]

    try:
        for fmt, run in runs.items():
            def parity():
                if not warehouse("SELECT 1 FROM information_schema.tables WHERE table_name = ?", run.table):
                    return "no table yet"
                try:
                    rows = warehouse(f'SELECT "ID", "NAME", "QTY", "{amt.upper()}" FROM "{run.table}" WHERE NOT "IS_DELETED"')
                except Exception as e:  # the added column is not there yet
                    return str(e)[:200]
                target = {int(r[0]): (r[1], None if r[2] is None else int(r[2]), r[3]) for r in rows}
                missing = [k for k in source if k not in target]
                wrong = [k for k in source if k in target and target[k] != source[k]]
                if missing or wrong:
                    return f"{len(missing)} missing, {len(wrong)} different, e.g. " + \
                        str([(k, source[k], target.get(k)) for k in (missing + wrong)[:3]])
                return None

            wait_until(parity, 180, f"{fmt} parity")
            # The widened column is wider in Snowflake too.
            assert column_type(run.table, amt.upper())[1:] == (14, 2), column_type(run.table, amt.upper())
            # The dropped column stays; rows written after the drop leave it NULL.
            rows = warehouse(f'SELECT "ID", "{gone.upper()}" FROM "{run.table}" ORDER BY "ID"')
            with_value = [i for i, g in rows if g is not None]
            assert with_value, f"{fmt}: the dropped column never received values"
            after_drop = [i for i, g in rows if i > max(with_value)]
            assert after_drop, f"{fmt}: no rows after the drop"
            assert all(g is None for i, g in rows if i > max(with_value))
    finally:
        for f in floes.values():
            f.stop()
        with pg.cursor() as cur:
            cur.execute(f"ALTER TABLE evolving DROP COLUMN IF EXISTS {amt}")
    for fmt, f in floes.items():
        out = f.output()
        assert "added a column to the target table" in out, f"{fmt}: {f.log_path}"
        assert "widened a column of the target table" in out, f"{fmt}: {f.log_path}"
        # Nothing dead-lettered but earlier runs' incompatible rows (none on a fresh stack; on a
        # reused one, how many depends on how their batches fell).
        dead = int(out.split("floe stopped")[-1].split("dlq=")[1].split()[0])
        assert dead <= changed_rows, f"{fmt}: {dead} dead-lettered, expected {changed_rows}; {f.log_path}"


def test_an_incompatible_type_change_goes_to_the_dead_letter_topic(pg):
    run = Run("evolve_incompatible")
    flip = f"flip_{run.suffix}"
    floe = Floe(run, FLOE__KAFKA__TOPICS=f'["{TOPICS["json"]}"]')
    try:
        with pg.cursor() as cur:
            cur.execute(f"ALTER TABLE evolving ADD COLUMN {flip} INTEGER")
            cur.execute(f"INSERT INTO evolving (name, {flip}) VALUES ('before', 1) RETURNING id")
            before = cur.fetchone()[0]
            wait_until(lambda: None if has_row(run.table, before) else "not loaded",
                       120, "row before the change")
            # integer -> text: Snowflake cannot turn NUMBER into VARCHAR.
            cur.execute(f"ALTER TABLE evolving ALTER COLUMN {flip} TYPE TEXT")
            cur.execute(f"INSERT INTO evolving (name, {flip}) VALUES ('changed', 'abc') RETURNING id")
            changed = cur.fetchone()[0]
            # (Earlier runs' incompatible rows are in the topic too: find this run's.)
            dead, deadline = [], time.time() + 90
            while not dead and time.time() < deadline:
                dead = [m for m in dlq_messages(run, "load", 1, timeout=10)
                        if json.loads(m.key())["payload"]["id"] == changed]
            assert dead, f"the changed row was not dead-lettered; log: {floe.log_path}"
            reason = dict(dead[0].headers())["floe.reason"].decode()
            assert flip.upper() in reason and "cannot apply in place" in reason, reason
            # Once the column is gone from the source, the table loads again.
            cur.execute(f"ALTER TABLE evolving DROP COLUMN {flip}")
            cur.execute("INSERT INTO evolving (name) VALUES ('after') RETURNING id")
            after = cur.fetchone()[0]
            wait_until(lambda: None if has_row(run.table, after) else "not loaded",
                       120, "row after the column was dropped")
        assert not has_row(run.table, changed), \
            "the row with the incompatible value must not be in the table"
    finally:
        assert floe.stop() == 0
        with pg.cursor() as cur:
            cur.execute(f"ALTER TABLE evolving DROP COLUMN IF EXISTS {flip}")
