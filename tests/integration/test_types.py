"""Type fidelity: every type the Debezium PostgreSQL connector emits (the `all_types` table of
docker/init-postgres.sql, edge values included) lands in Snowflake with the right type and the
same value, through JSON and through Avro.

Values Snowflake has no type for keep Debezium's exact text: `timetz` as the UTC time
(`10:34:56.789Z`), `interval` as ISO-8601 (`P1Y2M3DT4H5M6.78S`), unconstrained `numeric` as its
digits, `uuid`, `inet` and enums as text; arrays, `json` and `jsonb` are VARIANT.

One emulator limit shapes the data: fakesnow stores NUMBER(p, 0) as a 64-bit integer, so the
38-digit case uses NUMERIC(38,2) (real Snowflake holds NUMBER(38,0) in full)."""

import datetime
import json
import math
import time
from decimal import Decimal

from harness import Floe, Run, warehouse_connect

COLUMNS = [
    "id", "c_smallint", "c_integer", "c_bigint", "c_numeric", "c_numeric38", "c_numeric_var",
    "c_real", "c_double", "c_boolean", "c_char", "c_varchar", "c_text", "c_bytea", "c_date",
    "c_time", "c_time3", "c_timetz", "c_timestamp", "c_timestamptz", "c_interval", "c_uuid",
    "c_json", "c_jsonb", "c_int_array", "c_text_array", "c_enum", "c_money", "c_inet",
]

# (warehouse data type, numeric scale or None) each column must get.
EXPECTED_TYPES = {
    "id": ("NUMBER", 0), "c_smallint": ("NUMBER", 0), "c_integer": ("NUMBER", 0),
    "c_bigint": ("NUMBER", 0), "c_numeric": ("NUMBER", 10), "c_numeric38": ("NUMBER", 2),
    "c_numeric_var": ("TEXT", None), "c_real": ("FLOAT", None), "c_double": ("FLOAT", None),
    "c_boolean": ("BOOLEAN", None), "c_char": ("TEXT", None), "c_varchar": ("TEXT", None),
    "c_text": ("TEXT", None), "c_bytea": ("BINARY", None), "c_date": ("DATE", None),
    "c_time": ("TIME", None), "c_time3": ("TIME", None), "c_timetz": ("TEXT", None),
    "c_timestamp": ("TIMESTAMP_NTZ", None), "c_timestamptz": ("TIMESTAMP_TZ", None),
    "c_interval": ("TEXT", None), "c_uuid": ("TEXT", None), "c_json": ("VARIANT", None),
    "c_jsonb": ("VARIANT", None), "c_int_array": ("VARIANT", None),
    "c_text_array": ("VARIANT", None), "c_enum": ("TEXT", None), "c_money": ("NUMBER", 2),
    "c_inet": ("TEXT", None),
}

INSERT = f"INSERT INTO all_types ({', '.join(COLUMNS[1:])}) VALUES ({', '.join(['%s'] * (len(COLUMNS) - 1))}) RETURNING id"

EDGE_ROWS = [
    # maxima
    (32767, 2147483647, 9223372036854775807, "9999999999999999999999999999.9999999999",
     "999999999999999999999999999999999999.99", "123456789012345678901234567890.123456789",
     "3.4e38", "1.7976931348623157e308", True, "ab", "varchar ☃", "text 'q' \"dq\" \\ \n",
     b"\x00\xff\x10", "9999-12-31", "23:59:59.999999", "12:34:56.789", "12:34:56.789+02",
     "9999-12-31 23:59:59.999999", "2024-02-29 12:00:00+05:30", "1 year 2 mons 3 days 04:05:06.78",
     "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", '{"a": [1, 2.5, null]}', '{"b": {"c": true}}',
     [1, 2, 3], ["x", "y z", None], "happy", "1234567.89", "192.168.0.1/24"),
    # minima, empties, NaN and infinities
    (-32768, -2147483648, -9223372036854775808, "-0.0000000001",
     "-999999999999999999999999999999999999.99", "-0.000000000000000001", "NaN", "-Infinity",
     False, "", "", "", b"", "0001-01-01", "00:00:00", "00:00:00", "00:00:00-08",
     "0001-01-01 00:00:00", "1970-01-01 00:00:00+00", "-1 days -00:00:01",
     "00000000-0000-0000-0000-000000000000", "[]", "{}", [], [], "sad",
     "-92233720368547758.08", "::1"),
    # zeros, negative zero, +Infinity, JSON scalars
    (0, 0, 0, "0", "0", "0", "-0", "Infinity", None, None, None, None, None, "1970-01-01",
     "12:00:00", None, None, "2000-01-01 00:00:00", "2262-04-11 23:47:16.854775+00",
     "0 seconds", None, "null", '"text"', [None], None, None, "0", None),
    # every nullable column NULL
    (1,) + (None,) * 27,
]

SOURCE_SQL = f"""
SELECT {', '.join(c for c in COLUMNS if c not in ('c_interval', 'c_money', 'c_inet'))},
       extract(year from c_interval)::int, extract(month from c_interval)::int,
       extract(day from c_interval)::int, extract(hour from c_interval)::int,
       extract(minute from c_interval)::int, extract(second from c_interval),
       c_interval IS NULL, c_money::numeric, c_inet
FROM all_types"""


def iso_interval(y, mo, d, h, mi, s, is_null):
    if is_null:
        return None
    secs = format(s.normalize(), "f") if s != 0 else "0"
    return f"P{y}Y{mo}M{d}DT{h}H{mi}M{secs}S"


def source_rows(pg) -> dict[int, dict]:
    with pg.cursor() as cur:
        cur.execute(SOURCE_SQL)
        plain = [c for c in COLUMNS if c not in ("c_interval", "c_money", "c_inet")]
        rows = {}
        for r in cur.fetchall():
            row = dict(zip(plain, r[: len(plain)]))
            rest = r[len(plain):]
            row["c_interval"] = iso_interval(*rest[:7])
            # psycopg's address objects print as PostgreSQL does (no /32 or /128 on a host).
            row["c_money"], row["c_inet"] = rest[7], None if rest[8] is None else str(rest[8])
            rows[row["id"]] = row
        return rows


def target_rows(table: str) -> dict[int, dict]:
    wh = warehouse_connect()
    try:
        cur = wh.cursor()
        cur.execute(f'SELECT {", ".join(c.upper() for c in COLUMNS)} FROM "{table}" WHERE NOT "IS_DELETED"')
        return {int(r[0]): dict(zip(COLUMNS, r)) for r in cur.fetchall()}
    finally:
        wh.close()


def warehouse_types(table: str) -> dict[str, tuple]:
    wh = warehouse_connect()
    try:
        cur = wh.cursor()
        cur.execute("SELECT column_name, data_type, numeric_scale FROM information_schema.columns "
                    "WHERE table_name = ?", (table,))
        return {name.lower(): (ty, scale) for name, ty, scale in cur.fetchall()}
    finally:
        wh.close()


def utc_time(t: datetime.time) -> datetime.time:
    moment = datetime.datetime.combine(datetime.date(2000, 1, 1), t)
    return moment.astimezone(datetime.timezone.utc).time().replace(tzinfo=None)


def same(col: str, src, dst) -> bool:
    """Whether the warehouse value `dst` is the source value `src` (None is NULL)."""
    if col in ("c_json", "c_jsonb", "c_int_array", "c_text_array"):
        parsed = json.loads(dst) if isinstance(dst, str) else dst
        return parsed == src or (src is None and parsed in (None, "null"))
    if src is None or dst is None:
        return src is None and dst is None
    if col in ("c_real", "c_double"):
        if math.isnan(src):
            return math.isnan(dst)
        return float(dst) == src and math.copysign(1, float(dst)) == math.copysign(1, src)
    if col in ("c_numeric", "c_numeric38", "c_numeric_var", "c_money"):
        return Decimal(dst) == src
    if col == "c_timetz":
        return dst.endswith("Z") and datetime.time.fromisoformat(dst[:-1]) == utc_time(src)
    if col == "c_uuid":
        return dst == str(src)
    if col == "c_bytea":
        return bytes(dst) == bytes(src)
    return dst == src


def differences(src: dict[int, dict], dst: dict[int, dict]) -> list[str]:
    problems = [f"row {k} missing in the warehouse" for k in sorted(set(src) - set(dst))]
    problems += [f"row {k} should not be live" for k in sorted(set(dst) - set(src))]
    for k in sorted(set(src) & set(dst)):
        for col in COLUMNS:
            if not same(col, src[k][col], dst[k][col]):
                problems.append(f"row {k} {col}: source {src[k][col]!r} warehouse {dst[k][col]!r}")
    return problems


def load_and_compare(pg, topic: str, name: str) -> None:
    run = Run(name)
    floe = Floe(run, FLOE__KAFKA__TOPICS=f'["{topic}"]')
    deadline = time.time() + 120
    try:
        while True:
            problems = differences(source_rows(pg), target_rows(run.table)) if table_exists(run.table) else ["no table yet"]
            if not problems or time.time() > deadline:
                break
            time.sleep(2)
    finally:
        code = floe.stop()
    assert not problems, f"{topic}:\n" + "\n".join(problems[:40]) + f"\nlog: {floe.log_path}"
    assert code == 0
    types = warehouse_types(run.table)
    wrong = {c: (types.get(c), want) for c, want in EXPECTED_TYPES.items()
             if types.get(c) is None or types[c][0] != want[0] or (want[1] is not None and types[c][1] != want[1])}
    assert not wrong, f"{topic}: columns with the wrong type (got, want): {wrong}"
    assert "dlq=0" in floe.output().split("floe stopped")[-1], floe.output()[-2000:]


def table_exists(table: str) -> bool:
    wh = warehouse_connect()
    try:
        cur = wh.cursor()
        cur.execute("SELECT COUNT(*) FROM information_schema.tables WHERE table_name = ?", (table,))
        return cur.fetchone()[0] > 0
    finally:
        wh.close()


def test_every_type_through_json_and_avro(pg):
    with pg.cursor() as cur:
        ids = []
        for row in EDGE_ROWS:
            cur.execute(INSERT, row)
            ids.append(cur.fetchone()[0])
        # Before images too: an update of every column, and a delete.
        cur.execute("UPDATE all_types SET c_text = 'updated', c_double = -0.0, c_jsonb = '[1]' WHERE id = %s", (ids[0],))
        cur.execute("DELETE FROM all_types WHERE id = %s", (ids[3],))
    load_and_compare(pg, "cdc.public.all_types", "types_json")
    load_and_compare(pg, "cdcavro.public.all_types", "types_avro")
