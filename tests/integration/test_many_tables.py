"""Many tables: every table of the `shop` schema, read through a topic pattern, lands in its own
Snowflake table named by the naming rule (one name overridden per topic); a composite key is
upserted and deleted by both its columns; a table without a primary key loads append-only; each
table has its own rejects table. The same through JSON and Avro, and a replay of every topic from
the beginning (a new consumer group) changes nothing."""

import random
import time
from collections import Counter

from harness import Floe, Run, config_with_plugins, warehouse_connect

# The validator on two of the tables, so that each gets its own rejects table.
PLUGINS = """
[plugins]
on_fault = "dead-letter"

[[plugins.chain]]
name = "customers-validator"
path = "plugins/dist/validator.wasm"
tables = ["shop.customers"]
[plugins.chain.config]
rules = [{ column = "email", check = "regex", pattern = "^[^@ ]+@[^@ ]+$" }]

[[plugins.chain]]
name = "orders-validator"
path = "plugins/dist/validator.wasm"
tables = ["shop.orders"]
[plugins.chain.config]
rules = [{ column = "status", check = "one-of", values = ["new", "paid", "shipped"] }]
"""

KEYS = {
    "customers": ["customer_id"],
    "orders": ["order_id"],
    "order_lines": ["order_id", "line_no"],
}
COLUMNS = {
    "customers": ["customer_id", "email", "name"],
    "orders": ["order_id", "customer_id", "placed_at", "status"],
    "order_lines": ["order_id", "line_no", "sku", "qty", "price"],
    "page_views": ["viewed_at", "customer_id", "url"],
}


def workload(pg, seed: int) -> dict[str, set]:
    """Inserts, updates and deletes across the shop; returns the keys of the rows the validators
    must refuse (per table)."""
    rnd = random.Random(seed)
    bad = {"customers": set(), "orders": set()}
    with pg.cursor() as cur:
        customers = []
        for i in range(40):
            email = f"user{seed}_{i}@example.com" if i % 13 else f"broken-{seed}-{i}"
            cur.execute("INSERT INTO shop.customers (email, name) VALUES (%s, %s) RETURNING customer_id",
                        (email, f"Customer {i}"))
            cid = cur.fetchone()[0]
            customers.append(cid)
            if "@" not in email:
                bad["customers"].add((cid,))
        for i in range(60):
            status = "new" if i % 17 else "lost"
            cur.execute("INSERT INTO shop.orders (customer_id, status) VALUES (%s, %s) RETURNING order_id",
                        (rnd.choice(customers), status))
            oid = cur.fetchone()[0]
            if status == "lost":
                bad["orders"].add((oid,))
            for line in range(1, rnd.randint(2, 5)):
                cur.execute("INSERT INTO shop.order_lines VALUES (%s, %s, %s, %s, %s)",
                            (oid, line, f"SKU-{rnd.randint(1, 99)}", rnd.randint(1, 9), f"{rnd.randint(100, 99999) / 100:.2f}"))
            if i % 5 == 0:
                cur.execute("UPDATE shop.order_lines SET qty = qty + 10 WHERE order_id = %s AND line_no = 1", (oid,))
            if i % 7 == 0:
                cur.execute("DELETE FROM shop.order_lines WHERE order_id = %s AND line_no = 1", (oid,))
            if i % 3 == 0 and status != "lost":
                cur.execute("UPDATE shop.orders SET status = 'paid' WHERE order_id = %s", (oid,))
            for _ in range(2):
                cur.execute("INSERT INTO shop.page_views (customer_id, url) VALUES (%s, %s)",
                            (rnd.choice(customers), f"/product/{rnd.randint(1, 500)}"))
        cur.execute("UPDATE shop.customers SET name = name || ' (vip)' WHERE customer_id = %s", (customers[1],))
        cur.execute("DELETE FROM shop.customers WHERE customer_id = %s", (customers[2],))
    return bad


def norm(v):
    if hasattr(v, "timestamp"):
        return round(v.timestamp(), 6)
    if hasattr(v, "as_tuple"):  # Decimal
        return str(v.normalize())
    return v


def source_rows(pg, table: str) -> list[tuple]:
    with pg.cursor() as cur:
        cur.execute(f"SELECT {', '.join(COLUMNS[table])} FROM shop.{table}")
        return [tuple(norm(v) for v in r) for r in cur.fetchall()]


def target_rows(target: str, table: str) -> list[tuple] | None:
    wh = warehouse_connect()
    try:
        cur = wh.cursor()
        cols = ", ".join(f'"{c.upper()}"' for c in COLUMNS[table])
        where = ' WHERE NOT "IS_DELETED"' if table in KEYS else ""
        cur.execute(f'SELECT {cols} FROM "{target}"{where}')
        return [tuple(norm(v) for v in r) for r in cur.fetchall()]
    except Exception:
        return None  # not created yet
    finally:
        wh.close()


def problems(pg, names: dict[str, str], bad: dict[str, set]) -> list[str]:
    out = []
    for table, target in names.items():
        src = source_rows(pg, table)
        dst = target_rows(target, table)
        if dst is None:
            out.append(f"{target} does not exist yet")
            continue
        if table in KEYS:
            n = len(KEYS[table])
            refused = bad.get(table, set())
            want = {r[:n]: r for r in src if r[:n] not in refused}
            got = {r[:n]: r for r in dst}
            if len(got) != len(dst):
                out.append(f"{target}: duplicate keys")
            if want != got:
                diff = set(want.items()) ^ set(got.items())
                out.append(f"{target}: {len(diff)} rows differ, e.g. {sorted(diff, key=str)[:2]}")
            leaked = refused & set(got)
            if leaked:
                out.append(f"{target}: refused rows loaded: {sorted(leaked)[:3]}")
        elif Counter(src) != Counter(dst):
            out.append(f"{target} (append-only): {sum((Counter(src) - Counter(dst)).values())} missing, "
                       f"{sum((Counter(dst) - Counter(src)).values())} extra")
    return out


def rejects(target: str) -> set:
    wh = warehouse_connect()
    try:
        cur = wh.cursor()
        cur.execute(f'SELECT "RECORD_KEY" FROM "{target}_REJECTS"')
        return {r[0] for r in cur.fetchall()}
    except Exception:
        return set()
    finally:
        wh.close()


def wait_for(pg, names, bad, timeout=240) -> list[str]:
    deadline = time.time() + timeout
    while True:
        found = problems(pg, names, bad)
        if not found or time.time() > deadline:
            return found
        time.sleep(3)


def test_a_schema_of_tables_through_json_and_avro_and_a_replay(pg):
    runs = {fmt: Run(f"shop_{fmt}") for fmt in ("json", "avro", "replay")}
    patterns = {"json": r"^cdc\\.shop\\..*", "avro": r"^cdcavro\\.shop\\..*", "replay": r"^cdc\\.shop\\..*"}
    prefix = {"json": "cdc", "avro": "cdcavro", "replay": "cdc"}
    bad = workload(pg, seed=int(time.time()) % 100000)
    # Earlier runs refused other rows: every refused row in the source is excluded from parity.
    with pg.cursor() as cur:
        cur.execute("SELECT customer_id FROM shop.customers WHERE email NOT LIKE '%@%'")
        bad["customers"] |= {(r[0],) for r in cur.fetchall()}
        cur.execute("SELECT order_id FROM shop.orders WHERE status NOT IN ('new', 'paid', 'shipped')")
        bad["orders"] |= {(r[0],) for r in cur.fetchall()}

    def names_of(fmt: str) -> dict[str, str]:
        # The replay writes into the JSON run's tables.
        suffix = runs["json" if fmt == "replay" else fmt].suffix.upper()
        names = {t: f"SHOP_{t.upper()}_{suffix}" for t in COLUMNS}
        names["orders"] = f"ORDERS_OVERRIDE_{suffix}"
        return names

    def start(fmt: str, *args: str) -> Floe:
        run = runs[fmt]
        suffix = runs["json" if fmt == "replay" else fmt].suffix.upper()
        return Floe(
            run,
            *args,
            config=config_with_plugins(run, PLUGINS),
            FLOE__KAFKA__TOPICS=f'["{patterns[fmt]}"]',
            FLOE__SNOWFLAKE__TABLE="",
            FLOE__SNOWFLAKE__TABLE_NAME=f"{{schema}}_{{table}}_{suffix}",
            **{f"FLOE__SNOWFLAKE__TABLES__{prefix[fmt].upper()}.SHOP.ORDERS": f"ORDERS_OVERRIDE_{suffix}"},
        )

    floes = {fmt: start(fmt) for fmt in ("json", "avro")}
    try:
        for fmt in ("json", "avro"):
            found = wait_for(pg, names_of(fmt), bad)
            assert not found, f"{fmt}:\n" + "\n".join(found) + f"\nlog: {floes[fmt].log_path}"
            # Each validated table has its own rejects table, holding that table's refused rows.
            for table in ("customers", "orders"):
                keys = rejects(names_of(fmt)[table])
                assert len(keys) == len(bad[table]), (fmt, table, len(keys), len(bad[table]))
    finally:
        for f in floes.values():
            assert f.stop() == 0, f.output()[-2000:]
    out = floes["json"].output()
    assert "loading it append-only" in out, floes["json"].log_path

    # Every topic again from the beginning into the same tables: nothing changes, no duplicates
    # (keyed rows are merged by key, append-only rows recognised by their Kafka position).
    before = {t: sorted(map(str, target_rows(n, t))) for t, n in names_of("json").items()}
    replay = start("replay", "--exit-when-idle", "6")
    assert replay.wait(300) == 0, replay.output()[-2000:]
    after = {t: sorted(map(str, target_rows(n, t))) for t, n in names_of("json").items()}
    assert before == after, "a replay changed the warehouse"
    assert "loaded=0" not in replay.output().split("floe stopped")[-1], "the replay loaded nothing"
