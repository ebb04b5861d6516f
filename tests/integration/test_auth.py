"""Key-pair (JWT) authentication: floe reads a PKCS#8 private key, encrypted or not, and logs in
with it. The stand-in accepts any credentials, so this proves floe's side of the exchange (key
file, passphrase, signed login) with no password configured at all."""

import subprocess

from harness import TOPIC, Run, run_until_idle, stats_line, topic_size, wait_for_topic


def make_key(tmp_path, passphrase: str | None) -> str:
    path = tmp_path / ("key-enc.p8" if passphrase else "key.p8")
    cmd = ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(path)]
    if passphrase:
        cmd += ["-aes-256-cbc", "-pass", f"pass:{passphrase}"]
    subprocess.run(cmd, check=True, capture_output=True)
    return str(path)


def test_key_pair_login(pg, tmp_path):
    before = topic_size(TOPIC)
    with pg.cursor() as cur:
        cur.execute("INSERT INTO transactions (user_id, status) VALUES (60, 'pending')")
    # On a fresh stack this may be the topic's first message: let Debezium publish it first.
    wait_for_topic(TOPIC, before + 1)
    for passphrase in (None, "s3cret-phrase"):
        run = Run("keypair")
        env = {
            "FLOE__SNOWFLAKE__PASSWORD": "",
            "SNOWFLAKE_PRIVATE_KEY_PATH": make_key(tmp_path, passphrase),
            "FLOE__BATCH__MAX_RECORDS": "5000",
        }
        if passphrase:
            env["SNOWFLAKE_PRIVATE_KEY_PASSPHRASE"] = passphrase
        floe = run_until_idle(run, **env)
        out = floe.output()
        line = stats_line(out)
        assert "loaded=0 " not in line, line
        # Logged in and loaded without a single failed load or login.
        assert "load failed" not in out and "login failed" not in out, out[-2000:]
        if passphrase:
            assert passphrase not in out, "the passphrase must never be logged"
