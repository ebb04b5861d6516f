"""Runs SQL against the local Snowflake stand-in and prints the rows as a table.

    .cache/venv/bin/python scripts/warehouse.py "SELECT * FROM ACTIVE_TRANSACTIONS LIMIT 5"
"""

import os
import sys

import snowflake.connector


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    conn = snowflake.connector.connect(
        user="floe", password="local", account="local", host="127.0.0.1",
        port=int(os.environ.get("FLOE_FAKESNOW_PORT", "8086")), protocol="http",
        database="CDC_WAREHOUSE", schema="PUBLIC", session_parameters={"TIMEZONE": "UTC"},
    )
    cur = conn.cursor()
    cur.execute(sys.argv[1])
    names = [d[0] for d in cur.description]
    rows = [["" if v is None else str(v).replace("\n", "⏎")[:40] for v in r] for r in cur.fetchall()]
    widths = [max([len(n)] + [len(r[i]) for r in rows]) for i, n in enumerate(names)]
    print(" | ".join(n.ljust(w) for n, w in zip(names, widths)))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(v.ljust(w) for v, w in zip(r, widths)))


if __name__ == "__main__":
    main()
