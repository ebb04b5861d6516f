"""Parity: after a workload of more than 20,000 operations on PostgreSQL, the Snowflake table
equals the source table in every column, with soft and with hard deletes."""

import random
import string

from harness import Run, generate, parity_problems, run_until_idle, stats_line

LONG = "".join(random.Random(7).choices(string.ascii_letters + string.digits + " ", k=9_500))

EDGE_TEXTS = [
    "O'Reilly \"quoted\" ''double'' ; DROP TABLE transactions; --",
    "back\\slash \\n not a newline \\\\ two",
    "emoji 🎉🚀 and accents ça déjà vu — 東京 €",
    "multi\nline\r\ntext\twith tab",
    "",
]


def edge_cases(pg) -> list[int]:
    """Rows that exercise the awkward paths; returns the ids of the long-description rows."""
    with pg.cursor() as cur:
        # Every nullable column NULL but status, which the guide's rules require.
        cur.execute("INSERT INTO transactions (user_id, status) VALUES (1, 'pending')")
        for text in EDGE_TEXTS:
            cur.execute(
                "INSERT INTO transactions (user_id, amount, currency, status, payment_method, description, metadata) "
                "VALUES (%s, %s, 'EUR', 'pending', 'card', %s, %s::jsonb)",
                (2, "-12.34", text, '{"note": %s, "n": [1, null, 2.5]}' % ('"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t") + '"')),
            )
        # Several updates of one row inside one transaction.
        with pg.transaction():
            cur.execute("INSERT INTO transactions (user_id, status) VALUES (3, 'pending') RETURNING transaction_id")
            tid = cur.fetchone()[0]
            for status in ("completed", "refunded", "cancelled"):
                cur.execute("UPDATE transactions SET status = %s, updated_at = now() WHERE transaction_id = %s", (status, tid))
        # Insert then delete inside one transaction.
        with pg.transaction():
            cur.execute("INSERT INTO transactions (user_id, status) VALUES (4, 'failed') RETURNING transaction_id")
            gone = cur.fetchone()[0]
            cur.execute("DELETE FROM transactions WHERE transaction_id = %s", (gone,))
        # A primary-key change: Debezium sends a delete of the old key and a create of the new one.
        cur.execute("INSERT INTO transactions (user_id, status) VALUES (5, 'completed') RETURNING transaction_id")
        moved = cur.fetchone()[0]
        cur.execute("UPDATE transactions SET transaction_id = %s WHERE transaction_id = %s", (moved + 50_000_000, moved))
        # Descriptions over 8 KB, stored out of line (TOAST).
        longs = []
        for i in range(3):
            cur.execute(
                "INSERT INTO transactions (user_id, status, description) VALUES (6, 'pending', %s) RETURNING transaction_id",
                (LONG[i:] + str(i),),
            )
            longs.append(cur.fetchone()[0])
        return longs


def touch_without_description(pg, ids: list[int]) -> None:
    """Updates that leave the long description alone: Debezium sends the unchanged-TOAST placeholder."""
    with pg.cursor() as cur:
        for tid in ids:
            cur.execute("UPDATE transactions SET status = 'completed', updated_at = now() WHERE transaction_id = %s", (tid,))
            cur.execute("UPDATE transactions SET amount = 99.99 WHERE transaction_id = %s", (tid,))


def check_long_descriptions(wh, table: str, ids: list[int]) -> None:
    cur = wh.cursor()
    for i, tid in enumerate(ids):
        cur.execute(f'SELECT "DESCRIPTION", "STATUS" FROM "{table}" WHERE "TRANSACTION_ID" = ?', (tid,))
        desc, status = cur.fetchone()
        assert status == "completed"
        assert desc == LONG[i:] + str(i), f"long description of {tid} was not kept: {desc[:60]!r}"


def test_parity_with_soft_deletes(pg, wh):
    run = Run("parity_soft")
    out = generate("load", "--ops", "20000", seed=11)
    assert "inserted=" in out
    # After the load, so its random updates and deletes cannot touch the long rows.
    longs = edge_cases(pg)
    # Load once, then update the long rows without touching their description, so the
    # placeholder reaches floe in a later batch than the value itself.
    run_until_idle(run)
    touch_without_description(pg, longs)
    floe = run_until_idle(run)
    problems = parity_problems(pg, run.table, "soft")
    assert not problems, "\n".join(problems)
    check_long_descriptions(wh, run.table, longs)
    cur = wh.cursor()
    cur.execute(f'SELECT COUNT(*) FROM "{run.table}" WHERE "IS_DELETED"')
    assert cur.fetchone()[0] > 1000, "soft-deleted rows must stay, marked IS_DELETED"
    assert "loaded=" in stats_line(floe.output())


def test_parity_with_hard_deletes(pg, wh):
    run = Run("parity_hard")
    generate("load", "--ops", "3000", seed=12)
    longs = edge_cases(pg)
    run_until_idle(run, FLOE__SNOWFLAKE__DELETE_MODE="hard", FLOE__BATCH__MAX_RECORDS="100")
    touch_without_description(pg, longs)
    run_until_idle(run, FLOE__SNOWFLAKE__DELETE_MODE="hard", FLOE__BATCH__MAX_RECORDS="100")
    problems = parity_problems(pg, run.table, "hard")
    assert not problems, "\n".join(problems)
    check_long_descriptions(wh, run.table, longs)
