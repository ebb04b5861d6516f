#!/usr/bin/env bash
# `make bench`: throughput figures, printed as name=value lines.
#  1. decode_batch_*: decode → fold → MERGE payload on captured Debezium events, one core, no
#     network (host/benches/decode_batch.rs).
#  2. plugin_chain_*: decode → validator → enricher (the default plugins) in batches of 100,
#     one core, no network (host/benches/plugin_chain.rs).
#  3. json_/avro_decode_records_per_sec: the same captured events decoded from JSON and from Avro
#     in Confluent's wire format, one core, no network (host/benches/avro_decode.rs).
#  4. e2e_ceiling_*: a backlog of at least 100,000 Debezium events drained from Kafka into the
#     Snowflake stand-in by one floe process, from a fresh consumer group, in large batches;
#     e2e_latency_*: the same backlog with the config as shipped into a second stand-in that
#     answers each statement after 300 ms, as a real Snowflake does. Each prints events/s,
#     statements per batch and peak RSS; backlog_peak_rss_mb is the latter drain's peak RSS
#     (the issue's figure is for FLOE_BENCH_BACKLOG=1000000).
#  5. commit_to_visible_*: an idle floe with the config as shipped, a row committed on
#     PostgreSQL until it is visible in the warehouse, at 0 and 300 ms per statement.
#  6. e2e_tables_*: a backlog spread over the four tables of the `shop` schema (one without a
#     primary key), 300 ms per statement, config as shipped, loaded over one Snowflake session
#     and over `snowflake.sessions` (4) in the same run.
# FLOE_BENCH_TABLES_ONLY=1 runs 6 alone.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# FLOE_BENCH_BIN: another floe binary to measure (an older build, to compare in the same session).
FLOE=${FLOE_BENCH_BIN:-target/release/floe}
BACKLOG=${FLOE_BENCH_BACKLOG:-100000}

# FLOE_BENCH_E2E_ONLY=1 skips the one-core benchmarks (1-3).
if [ -z "${FLOE_BENCH_E2E_ONLY:-}" ]; then
  echo "== decode → batch → MERGE payload (one core)"
  taskset -c 0 cargo bench --locked --bench decode_batch 2>/dev/null | grep '='

  echo "== decode → validator → enricher, batches of 100 (one core)"
  bash scripts/build-plugins.sh >/dev/null
  taskset -c 0 cargo bench --locked --bench plugin_chain 2>/dev/null | grep '='

  echo "== decode only: the same events as JSON and as Avro (one core)"
  taskset -c 0 cargo bench --locked --bench avro_decode 2>/dev/null | grep '='
fi

echo "== end to end: a ${BACKLOG}-event backlog from Kafka into the stand-in, large batches"
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
# A second stand-in that answers each statement after 300 ms, as a real Snowflake does.
SLOW_PORT=${FLOE_BENCH_SLOW_PORT:-8096}
PY="${FLOE_CACHE:-$ROOT/.cache}/venv/bin/python"
slow_data=$(mktemp -d /tmp/floe-bench-slow-XXXXXX)
"$PY" stack/fakesnow_server.py --port "$SLOW_PORT" --db-path "$slow_data" --latency-ms 300 \
  >"$ROOT/.cache/bench-slow-warehouse.log" 2>&1 &
slow_pid=$!
trap 'kill $slow_pid 2>/dev/null || true; rm -rf "$slow_data"' EXIT
wh() {  # wh PORT SQL: one statement on a stand-in
  "$PY" - "$1" "$2" <<'PY'
import sys, snowflake.connector
c = snowflake.connector.connect(user="floe", password="x", account="local", host="127.0.0.1",
    port=int(sys.argv[1]), protocol="http", database="CDC_WAREHOUSE", schema="PUBLIC")
c.cursor().execute(sys.argv[2])
PY
}
for _ in $(seq 60); do wh "$SLOW_PORT" "SELECT 1" 2>/dev/null && break; sleep 1; done
wh "$SLOW_PORT" 'CREATE SCHEMA IF NOT EXISTS CDC_WAREHOUSE."PUBLIC"'

# drain NAME PORT [VAR=VALUE ...]: drain the backlog from a fresh consumer group into the stand-in
# on PORT, and print NAME's figures.
drain() {
  local name=$1 port=$2; shift 2
  local group="bench-$name-$(date +%s)"
  LAST_GROUP=$group log="$ROOT/.cache/bench-$name.log"
  local start end line consumed batches statements elapsed
  start=$(date +%s.%N)
  env FLOE__KAFKA__GROUP_ID="$group" \
    FLOE__SNOWFLAKE__TABLE="BENCH_${group//-/_}" FLOE__SNOWFLAKE__VIEWS_FILE= \
    FLOE__SNOWFLAKE__ENDPOINT="http://127.0.0.1:$port" "$@" \
    "$FLOE" run --config config/local.toml --exit-when-idle 3 2>"$log"
  end=$(date +%s.%N)
  line=$(grep "floe stopped" "$log" | tail -1)
  field() { echo "$line" | sed -E "s/.*[ =]$1=([0-9]+).*/\1/"; }
  consumed=$(field consumed); batches=$(field batches); statements=$(field statements)
  elapsed=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a - 3 }')
  echo "e2e_${name}_events=$consumed"
  echo "e2e_${name}_seconds=$elapsed"
  echo "e2e_${name}_events_per_sec=$(awk -v n="$consumed" -v s="$elapsed" 'BEGIN { printf "%d", n / s }')"
  echo "e2e_${name}_batches=$batches"
  echo "e2e_${name}_statements_per_batch=$(awk -v n="$statements" -v b="$batches" 'BEGIN { printf "%.2f", b ? n / b : 0 }')"
  LAST_PEAK_RSS_MB=$(field peak_rss_mb) LAST_EVENTS=$consumed
  echo "e2e_${name}_peak_rss_mb=$LAST_PEAK_RSS_MB"
}
# visible NAME PORT: with the last drain's group (caught up) and the config as shipped, the time
# from a commit on PostgreSQL to the row being visible in the stand-in on PORT, idle pipeline.
visible() {
  local name=$1 port=$2 table="BENCH_${LAST_GROUP//-/_}" floe_pid
  FLOE__KAFKA__GROUP_ID=$LAST_GROUP FLOE__SNOWFLAKE__TABLE="$table" FLOE__SNOWFLAKE__VIEWS_FILE= \
    FLOE__SNOWFLAKE__ENDPOINT="http://127.0.0.1:$port" \
    "$FLOE" run --config config/local.toml 2>>"$ROOT/.cache/bench-$name.log" &
  floe_pid=$!
  sleep 8
  "$PY" - "$table" "$port" "$name" <<'PY'
import sys, time, psycopg, snowflake.connector
table, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
pg = psycopg.connect("host=127.0.0.1 port=5433 user=postgres password=postgres dbname=postgres", autocommit=True)
wh = snowflake.connector.connect(user="floe", password="x", account="local", host="127.0.0.1", port=port,
    protocol="http", database="CDC_WAREHOUSE", schema="PUBLIC", paramstyle="qmark")
samples = []
for _ in range(4):
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
# The first load of a fresh process also makes the table's plan (a few statements more).
print("commit_to_visible_%s_first_ms=%d" % (name, samples[0] * 1000))
print("commit_to_visible_%s_ms_max=%d" % (name, max(samples[1:]) * 1000))
print("commit_to_visible_%s_ms_samples=" % name + ",".join("%d" % (s * 1000) for s in samples[1:]))
PY
  kill -TERM "$floe_pid"; wait "$floe_pid" || true
}

if [ -z "${FLOE_BENCH_TABLES_ONLY:-}" ]; then
# The ceiling: the stand-in with no added delay, large batches.
drain ceiling 8086 FLOE__BATCH__MAX_RECORDS=50000 FLOE__BATCH__BACKLOG_MAX_RECORDS=50000 \
  FLOE__BATCH__MAX_WAIT_MS=1000
echo "== commit on PostgreSQL -> row visible, idle, config as shipped, no added delay"
visible 0ms 8086
# The config as shipped (the guide's 100 records / 5 s, batches growing under the backlog),
# 300 ms per statement.
echo "== the same backlog, config as shipped, 300 ms per statement"
drain latency "$SLOW_PORT"
echo "backlog_peak_rss_mb=$LAST_PEAK_RSS_MB"
echo "backlog_events=$LAST_EVENTS"
echo "== commit on PostgreSQL -> row visible, idle, config as shipped, 300 ms per statement"
visible 300ms "$SLOW_PORT"
fi

# Many tables: at least TABLE_ROWS new rows in each shop table, then the shop topics drained at
# 300 ms per statement with one session, and with the default number of sessions.
TABLE_ROWS=${FLOE_BENCH_TABLE_ROWS:-15000}
psql "INSERT INTO shop.customers (email, name) SELECT 'bench' || g || '@example.com', 'bench ' || g FROM generate_series(1, $TABLE_ROWS) g;
      INSERT INTO shop.orders (customer_id, status) SELECT 1 + g % 1000, 'new' FROM generate_series(1, $TABLE_ROWS) g;
      INSERT INTO shop.order_lines SELECT m.base + g, 1, 'sku-' || g, 1 + g % 5, (g % 10000) / 100.0
        FROM generate_series(1, $TABLE_ROWS) g, (SELECT coalesce(max(order_id), 0) AS base FROM shop.order_lines) m;
      INSERT INTO shop.page_views (customer_id, url) SELECT 1 + g % 1000, '/bench/' || g FROM generate_series(1, $TABLE_ROWS) g" >/dev/null
sleep 15   # let Debezium publish them
for sessions in 1 4; do
  echo "== the shop's four tables, config as shipped, 300 ms per statement, snowflake.sessions = $sessions"
  drain "tables_${sessions}_sessions" "$SLOW_PORT" FLOE__KAFKA__TOPICS='["^cdc\\.shop\\..*"]' \
    FLOE__SNOWFLAKE__TABLE= FLOE__SNOWFLAKE__TABLE_NAME="{schema}_{table}_S${sessions}_$(date +%s)" \
    FLOE__SNOWFLAKE__SESSIONS="$sessions"
done
