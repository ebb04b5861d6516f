#!/usr/bin/env bash
# Captures Debezium events from the local stack's topic into the benchmark fixture:
# one "key<TAB>value" line per message (as Kafka's console consumer prints them), gzipped.
#   scripts/capture_fixture.sh [COUNT]     (default 2000; the stack must be up and hold events)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STACK=${FLOE_CACHE:-$ROOT/.cache}/stack
COUNT=${1:-2000}
OUT=$ROOT/host/benches/fixtures/debezium-transactions.jsonl.gz
mkdir -p "$(dirname "$OUT")"
java -cp "$STACK/kafka-libs/*" -Dlog4j2.configurationFile="$STACK/conf/log4j2.properties" \
  org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server 127.0.0.1:9092 \
  --topic cdc.public.transactions --from-beginning --max-messages "$COUNT" --timeout-ms 20000 \
  --property print.key=true --property key.separator=$'\t' 2>/dev/null \
  | grep -v $'\tnull$' | gzip -9 >"$OUT"
echo "wrote $(zcat "$OUT" | wc -l) events to $OUT ($(stat -c %s "$OUT") bytes)"
