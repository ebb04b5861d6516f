#!/usr/bin/env bash
# `make demo`: the real pipeline on the local stack. PostgreSQL → Debezium → Kafka → floe →
# Snowflake stand-in, then a look at what landed in the warehouse.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV=${FLOE_CACHE:-$ROOT/.cache}/venv
FLOE=target/release/floe

bash scripts/stack.sh up
echo "== building floe and its plugins"
cargo build --release --locked
bash scripts/build-plugins.sh
echo "== generating a workload on PostgreSQL (inserts, updates, deletes, a mixed load)"
"$FLOE" generate insert --count 500
"$FLOE" generate update --count 200
"$FLOE" generate delete --count 50
"$FLOE" generate load --ops 1000 --rate 500
echo "== running floe until it has caught up (config/local.toml)"
"$FLOE" run --config config/local.toml --exit-when-idle 8 2>&1 | grep -E "floe::stats|floe stopped|WARN|ERROR" || true
echo
echo "== source vs warehouse"
PGPASSWORD=postgres psql -h 127.0.0.1 -p 5433 -U postgres -d postgres -tAc \
  "SELECT 'rows in PostgreSQL transactions: ' || count(*) FROM transactions"
"$VENV/bin/python" scripts/warehouse.py \
  "SELECT COUNT_IF(NOT IS_DELETED) AS ACTIVE, COUNT_IF(IS_DELETED) AS SOFT_DELETED FROM TRANSACTIONS"
echo
echo "== a few rows of ACTIVE_TRANSACTIONS"
"$VENV/bin/python" scripts/warehouse.py \
  "SELECT TRANSACTION_ID, USER_ID, AMOUNT, CURRENCY, STATUS, PAYMENT_METHOD, DESCRIPTION, CREATED_AT FROM ACTIVE_TRANSACTIONS ORDER BY CDC_LOADED_AT DESC, TRANSACTION_ID DESC LIMIT 8"
echo
echo "== TRANSACTION_ANALYTICS"
"$VENV/bin/python" scripts/warehouse.py "SELECT * FROM TRANSACTION_ANALYTICS ORDER BY TRANSACTION_DATE DESC, STATUS LIMIT 6"
echo
echo "The stack keeps running: 'make status', 'make down'. Logs: .cache/stack/logs/"
