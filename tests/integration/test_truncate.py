"""A TRUNCATE on the source, with snowflake.truncate = "apply": the rows loaded before it are
marked deleted, the rows inserted after it load normally. (Runs last: it empties the source.)"""

from harness import Run, parity_problems, run_until_idle, warehouse_connect


def test_truncate_marks_earlier_rows_deleted(pg):
    run = Run("truncate")
    with pg.cursor() as cur:
        cur.execute("INSERT INTO transactions (user_id, status) VALUES (90, 'pending'), (91, 'failed')")
    run_until_idle(run, FLOE__SNOWFLAKE__TRUNCATE="apply")
    wh = warehouse_connect()
    cur = wh.cursor()
    cur.execute(f'SELECT COUNT(*) FROM "{run.table}" WHERE NOT "IS_DELETED"')
    before = cur.fetchone()[0]
    assert before >= 2

    with pg.cursor() as cur_pg:
        cur_pg.execute("TRUNCATE transactions")
        cur_pg.execute("INSERT INTO transactions (user_id, status) VALUES (92, 'completed') RETURNING transaction_id")
        survivor = cur_pg.fetchone()[0]
    floe = run_until_idle(run, FLOE__SNOWFLAKE__TRUNCATE="apply")
    assert "applied a source TRUNCATE" in floe.output()

    problems = parity_problems(pg, run.table, "soft")
    assert not problems, "\n".join(problems)
    cur.execute(f'SELECT "TRANSACTION_ID" FROM "{run.table}" WHERE NOT "IS_DELETED"')
    assert [r[0] for r in cur.fetchall()] == [survivor]
    cur.execute(f'SELECT COUNT(*) FROM "{run.table}" WHERE "CDC_OPERATION" = \'t\'')
    assert cur.fetchone()[0] >= before
