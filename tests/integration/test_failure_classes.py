"""Each class of Snowflake failure, produced on demand by the stand-in's fault switch
(stack/fakesnow_server.py): transient errors are retried and never blamed on rows (nothing lost,
nothing dead-lettered), a refused login stops floe with a message naming the settings."""

import os
import subprocess
import time

from harness import (
    FLOE_BIN, ROOT, Floe, Run, dlq_all, generate, stand_in_faults, wait_for_parity,
)

# Each answer Snowflake gives when it, not a row, is at fault: internal error, statement
# timeout, lock waiters, no running warehouse, expired session token, an HTTP 503 and a 429.
TRANSIENT = [
    {"code": "000603", "message": "SQL execution internal error: Processing aborted due to error 300002:3913117449"},
    {"code": "000630", "message": "Statement reached its statement or warehouse timeout of 120 second(s) and was canceled."},
    {"code": "000625", "message": "Statement '01b2' has locked table 'T' in transaction 1 and this lock has not yet been released."},
    {"code": "000606", "message": "No active warehouse selected in the current session."},
    {"code": "390114", "message": "Authentication token has expired.  The user must authenticate again."},
    {"http_status": 503},
    {"http_status": 429},
]


def wait_consumed(timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while stand_in_faults()["query"]:
        assert time.time() < deadline, "floe did not run the statements the faults were armed for"
        time.sleep(0.5)


def test_transient_failures_are_retried_and_never_blamed_on_rows(pg):
    run = Run("fault_classes")
    stand_in_faults("DELETE")
    generate("load", "--ops", "3000", seed=61)
    floe = Floe(run)
    # Writes go on while the faults are armed, so floe keeps running statements.
    load = subprocess.Popen(
        [str(FLOE_BIN), "generate", "--seed", "62", "load", "--rate", "40", "--seconds", "150"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        # Each fault twice in a row, at whatever statement floe runs next (a stage insert, a
        # MERGE, a probe...), with loads succeeding in between.
        for fault in TRANSIENT:
            time.sleep(1.5)
            stand_in_faults("POST", count=2, **fault)
            wait_consumed()
        load.terminate()
        load.wait(30)
        problems = wait_for_parity(pg, run.table, "soft", timeout=180)
    finally:
        if load.poll() is None:
            load.kill()
        stand_in_faults("DELETE")
        assert floe.stop() == 0, floe.output()[-3000:]
    assert not problems, "\n".join(problems)
    out = floe.output()
    assert "retrying" in out, "the faults were never hit"
    assert "row refused by Snowflake" not in out
    assert "looking for the rows it refuses" not in out
    letters = dlq_all(run.dlq)
    load_letters = [m for m in letters if dict(m.headers() or []).get("floe.stage") == b"load"]
    assert not load_letters, f"good rows dead-lettered: {[dict(m.headers()) for m in load_letters][:3]}"


def test_a_refused_login_stops_floe_naming_the_settings():
    run = Run("fault_auth")
    stand_in_faults("DELETE")
    stand_in_faults("POST", login=True, count=50, code="390100",
                    message="Incorrect username or password was specified.")
    try:
        floe = Floe(run)
        code = floe.wait(60)
    finally:
        stand_in_faults("DELETE")
    out = floe.output()
    assert code != 0, out[-2000:]
    assert "Incorrect username or password" in out, out[-2000:]
    assert "SNOWFLAKE_PASSWORD" in out and "snowflake.user" in out, out[-2000:]


SECRETS = {
    "SNOWFLAKE_PASSWORD": "planted-snowflake-0a9f",
    "SCHEMA_REGISTRY_PASSWORD": "planted-registry-77c1",
    "KAFKA_SASL_PASSWORD": "planted-sasl-5be2",
}


def test_no_secret_is_printed_by_check_config_errors_or_a_full_run(pg):
    env = dict(os.environ, **SECRETS)
    out = subprocess.run([str(FLOE_BIN), "check-config", "--config", "config/local.toml"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    shown = out.stdout + out.stderr
    assert out.returncode == 0, shown
    assert "sasl.password" in shown, "the masked key is still listed"
    # A value of the wrong type is named by its key, never echoed.
    bad = subprocess.run([str(FLOE_BIN), "check-config", "--config", "config/local.toml"], cwd=ROOT,
                         env=dict(env, FLOE__BATCH__MAX_RECORDS="planted-batch-3d4e"),
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "max_records" in bad.stderr, bad.stderr
    assert "planted-batch-3d4e" not in bad.stdout + bad.stderr
    # A full run (with the registry password sent to the registry), then a refused login.
    run = Run("secrets")
    generate("load", "--ops", "300", seed=71)
    floe = Floe(run, "--exit-when-idle", "5", FLOE__KAFKA__TOPICS='["cdc.public.transactions", "cdcavro.public.transactions"]',
                **{k: v for k, v in SECRETS.items() if k != "KAFKA_SASL_PASSWORD"})
    assert floe.wait(300) == 0, floe.output()[-2000:]
    stand_in_faults("POST", login=True, count=50, code="390100", message="Incorrect username or password was specified.")
    try:
        refused = Floe(Run("secrets_login"), **{k: v for k, v in SECRETS.items() if k != "KAFKA_SASL_PASSWORD"})
        assert refused.wait(60) != 0
    finally:
        stand_in_faults("DELETE")
    for text in (shown, floe.output(), refused.output()):
        for secret in SECRETS.values():
            assert secret not in text, f"{secret} printed"
