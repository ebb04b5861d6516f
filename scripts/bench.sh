#!/usr/bin/env bash
# `make bench`: throughput figures, printed as name=value lines.
#  1. decode_batch_*: decode → fold → MERGE payload on captured Debezium events, one core, no
#     network (host/benches/decode_batch.rs).
#  2. plugin_chain_*: decode → validator → enricher (the default plugins) in batches of 100,
#     one core, no network (host/benches/plugin_chain.rs).
#  3. json_/avro_decode_records_per_sec: the same captured events decoded from JSON and from Avro
#     in Confluent's wire format, one core, no network (host/benches/avro_decode.rs).
#  4. e2e_events_per_sec: a backlog of at least 100,000 Debezium events drained from Kafka into
#     the Snowflake stand-in by one floe process, from a fresh consumer group.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
FLOE=target/release/floe
BACKLOG=${FLOE_BENCH_BACKLOG:-100000}

echo "== decode → batch → MERGE payload (one core)"
taskset -c 0 cargo bench --locked --bench decode_batch 2>/dev/null | grep '='

echo "== decode → validator → enricher, batches of 100 (one core)"
bash scripts/build-plugins.sh >/dev/null
taskset -c 0 cargo bench --locked --bench plugin_chain 2>/dev/null | grep '='

echo "== decode only: the same events as JSON and as Avro (one core)"
taskset -c 0 cargo bench --locked --bench avro_decode 2>/dev/null | grep '='

echo "== end to end: a ${BACKLOG}-event backlog from Kafka into the stand-in"
bash scripts/stack.sh up >/dev/null
cargo build --release --locked 2>/dev/null
# Make sure the topic holds at least BACKLOG change events: bulk-insert what is missing.
psql() { PGPASSWORD=postgres PGOPTIONS='-c client_min_messages=warning' command psql -h 127.0.0.1 -p 5433 -U postgres -d postgres -tAc "$1"; }
have=$(psql "SELECT count(*) FROM transactions")
if [ "$have" -lt "$BACKLOG" ]; then
  psql "INSERT INTO transactions (user_id, amount, currency, status, payment_method, description, metadata)
        SELECT 1 + g % 5000, (g % 100000) / 100.0, 'EUR', 'pending', 'card', 'bench row ' || g,
               jsonb_build_object('g', g)
        FROM generate_series(1, $BACKLOG - $have) g" >/dev/null
  sleep 15   # let Debezium publish them
fi
group="bench-$(date +%s)"
start=$(date +%s.%N)
FLOE__KAFKA__GROUP_ID=$group FLOE__SNOWFLAKE__TABLE="BENCH_${group//-/_}" FLOE__SNOWFLAKE__VIEWS_FILE= \
  FLOE__BATCH__MAX_RECORDS=${FLOE_BENCH_BATCH:-5000} FLOE__BATCH__MAX_WAIT_MS=1000 \
  "$FLOE" run --config config/local.toml --exit-when-idle 3 2>"$ROOT/.cache/bench-e2e.log"
end=$(date +%s.%N)
line=$(grep "floe stopped" "$ROOT/.cache/bench-e2e.log" | tail -1)
consumed=$(echo "$line" | sed -E 's/.*consumed=([0-9]+).*/\1/')
elapsed=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a - 3 }')
echo "e2e_events=$consumed"
echo "e2e_batch_records=${FLOE_BENCH_BATCH:-5000}"
echo "e2e_seconds=$elapsed"
echo "e2e_events_per_sec=$(awk -v n="$consumed" -v s="$elapsed" 'BEGIN { printf "%d", n / s }')"
echo "e2e_peak_rss_mb=$(echo "$line" | sed -E 's/.*peak_rss_mb=([0-9]+).*/\1/')"

echo "== latency: commit on PostgreSQL -> row visible in the warehouse, idle pipeline, guide defaults"
FLOE__KAFKA__GROUP_ID=$group FLOE__SNOWFLAKE__TABLE="BENCH_${group//-/_}" FLOE__SNOWFLAKE__VIEWS_FILE= \
  "$FLOE" run --config config/local.toml 2>>"$ROOT/.cache/bench-e2e.log" &
floe_pid=$!
sleep 8
"${FLOE_CACHE:-$ROOT/.cache}/venv/bin/python" - "BENCH_${group//-/_}" <<'PY'
import sys, time, psycopg, snowflake.connector
table = sys.argv[1]
pg = psycopg.connect("host=127.0.0.1 port=5433 user=postgres password=postgres dbname=postgres", autocommit=True)
wh = snowflake.connector.connect(user="floe", password="x", account="local", host="127.0.0.1", port=8086,
    protocol="http", database="CDC_WAREHOUSE", schema="PUBLIC", paramstyle="qmark")
samples = []
for _ in range(3):
    t0 = time.time()
    tid = pg.execute("INSERT INTO transactions (user_id, status) VALUES (1, 'pending') RETURNING transaction_id").fetchone()[0]
    cur = wh.cursor()
    while True:
        cur.execute(f'SELECT COUNT(*) FROM "{table}" WHERE "TRANSACTION_ID" = ?', (tid,))
        if cur.fetchone()[0]:
            break
        if time.time() - t0 > 60:
            sys.exit("row never became visible")
        time.sleep(0.05)
    samples.append(time.time() - t0)
    time.sleep(1)
print("commit_to_visible_ms_max=%d" % (max(samples) * 1000))
print("commit_to_visible_ms_samples=" + ",".join("%d" % (s * 1000) for s in samples))
PY
kill -TERM "$floe_pid"; wait "$floe_pid" || true
