#!/usr/bin/env bash
# The local stack without Docker: PostgreSQL (Debian packages), Apache Kafka in KRaft mode,
# Kafka Connect with the Debezium PostgreSQL connector and Apicurio Registry (a Confluent-compatible
# Schema Registry) with its Avro converter (Maven Central), and the fakesnow server (PyPI) standing
# in for Snowflake. Two connectors capture the same table: one writes JSON (topic prefix `cdc`),
# one writes Avro in Confluent's wire format (topic prefix `cdcavro`). Everything listens on
# loopback; downloads, data and logs live in the ignored folder $FLOE_CACHE (default .cache/).
#
#   scripts/stack.sh install              install what is missing (idempotent, cached)
#   scripts/stack.sh up | down | status   the whole stack
#   scripts/stack.sh start|stop COMPONENT postgres | kafka | registry | connect | fakesnow
#   scripts/stack.sh connector            (re)register the Debezium connectors
#   scripts/stack.sh reset                down, then delete all data (downloads stay)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${FLOE_CACHE:-$ROOT/.cache}
STACK=$CACHE/stack
LOGS=$STACK/logs
RUN=$STACK/run
VENV=$CACHE/venv
PG_PORT=${FLOE_PG_PORT:-5433}
FAKESNOW_PORT=${FLOE_FAKESNOW_PORT:-8086}
REGISTRY_PORT=${FLOE_REGISTRY_PORT:-8081}
REGISTRY_URL=http://127.0.0.1:$REGISTRY_PORT
CONNECT_URL=http://127.0.0.1:8083
CONNECTOR_FILES=("$ROOT/docker/transaction_connector.json" "$ROOT/docker/transaction_connector_avro.json")
# Maven resolves everything from Maven Central (some POMs name other repositories).
MVN=(mvn -s "$ROOT/stack/maven/settings.xml" -q -B)
# Apicurio Registry 3.0.x is the last line that runs on Java 17 (3.1+ needs Java 21).
APICURIO_VERSION=3.0.9

say() { printf '[stack] %s\n' "$*"; }
die() { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }

# Waits until "$2..." succeeds, or fails naming the component and its log file.
wait_for() {
  local name=$1 timeout=$2 log=$3; shift 3
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      echo "----- last lines of $log -----" >&2
      tail -n 30 "$log" >&2 2>/dev/null || true
      die "$name did not become healthy within ${timeout}s; read $log"
    fi
    sleep 1
  done
}

pid_alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

pg_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/postgres" ] && { echo "$d"; return 0; }
  done
  return 1
}

# ---------------------------------------------------------------------------------------------
install() {
  mkdir -p "$STACK" "$LOGS" "$RUN"
  local apt_needed=()
  pg_bin >/dev/null || apt_needed+=(postgresql postgresql-contrib)
  command -v psql >/dev/null || apt_needed+=(postgresql-client)
  command -v java >/dev/null || apt_needed+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null || apt_needed+=(maven)
  command -v curl >/dev/null || apt_needed+=(curl)
  command -v python3 >/dev/null || apt_needed+=(python3 python3-venv)
  command -v cc >/dev/null || apt_needed+=(build-essential)
  command -v cmake >/dev/null || apt_needed+=(cmake)
  command -v npm >/dev/null || apt_needed+=(nodejs npm)   # the JavaScript example plugin
  if ((${#apt_needed[@]})); then
    say "installing Debian packages: ${apt_needed[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_needed[@]}" >/dev/null
  fi
  command -v cargo >/dev/null || die "cargo not found: install Rust with rustup (https://rustup.rs)"
  if command -v rustup >/dev/null; then
    for component in rustfmt clippy; do
      rustup component list --installed 2>/dev/null | grep -q "^$component" \
        || rustup component add "$component" >/dev/null
    done
    # Plugins are WebAssembly components built for this target.
    rustup target list --installed 2>/dev/null | grep -q '^wasm32-wasip2$' \
      || rustup target add wasm32-wasip2 >/dev/null
  fi

  if [ ! -f "$STACK/kafka-libs/.complete" ]; then
    say "resolving Apache Kafka and Kafka Connect from Maven Central"
    rm -rf "$STACK/kafka-libs"
    (cd "$ROOT/stack/maven/kafka" && "${MVN[@]}" dependency:copy-dependencies \
      -DoutputDirectory="$STACK/kafka-libs" -DincludeScope=runtime) >"$LOGS/maven-kafka.log" 2>&1 \
      || die "Maven could not resolve Kafka; read $LOGS/maven-kafka.log"
    touch "$STACK/kafka-libs/.complete"
  fi
  if [ ! -f "$STACK/connect-plugins/debezium-postgres/.complete" ]; then
    say "resolving the Debezium PostgreSQL connector from Maven Central"
    rm -rf "$STACK/connect-plugins/debezium-postgres"
    (cd "$ROOT/stack/maven/debezium" && "${MVN[@]}" dependency:copy-dependencies \
      -DoutputDirectory="$STACK/connect-plugins/debezium-postgres" -DincludeScope=runtime) \
      >"$LOGS/maven-debezium.log" 2>&1 \
      || die "Maven could not resolve Debezium; read $LOGS/maven-debezium.log"
    # The worker provides these; a second copy inside the plugin only causes linkage warnings.
    rm -f "$STACK"/connect-plugins/debezium-postgres/slf4j-api-*.jar
    touch "$STACK/connect-plugins/debezium-postgres/.complete"
  fi
  if [ ! -f "$STACK/connect-plugins/apicurio-converter/.complete" ]; then
    say "resolving Apicurio's Avro converter for Kafka Connect from Maven Central"
    rm -rf "$STACK/connect-plugins/apicurio-converter"
    (cd "$ROOT/stack/maven/apicurio" && "${MVN[@]}" dependency:copy-dependencies \
      -DoutputDirectory="$STACK/connect-plugins/apicurio-converter" -DincludeScope=runtime) \
      >"$LOGS/maven-apicurio-converter.log" 2>&1 \
      || die "Maven could not resolve the Apicurio converter; read $LOGS/maven-apicurio-converter.log"
    # Kafka's own jars come from the worker; second copies inside a plugin only cause conflicts.
    rm -f "$STACK"/connect-plugins/apicurio-converter/{connect-api,connect-json,kafka-clients,slf4j-api,lz4-java,snappy-java,zstd-jni}-*.jar
    touch "$STACK/connect-plugins/apicurio-converter/.complete"
  fi
  if [ ! -f "$STACK/apicurio-registry/.complete-$APICURIO_VERSION" ]; then
    say "fetching Apicurio Registry $APICURIO_VERSION (Schema Registry) from Maven Central"
    rm -rf "$STACK/apicurio-registry" "$STACK/apicurio-download"
    "${MVN[@]}" dependency:copy -Dartifact="io.apicurio:apicurio-registry-app:$APICURIO_VERSION:tar.gz:all" \
      -DoutputDirectory="$STACK/apicurio-download" >"$LOGS/maven-apicurio-registry.log" 2>&1 \
      || die "Maven could not fetch Apicurio Registry; read $LOGS/maven-apicurio-registry.log"
    mkdir -p "$STACK/apicurio-registry"
    tar xzf "$STACK"/apicurio-download/apicurio-registry-app-*-all.tar.gz -C "$STACK/apicurio-registry"
    rm -rf "$STACK/apicurio-download"
    touch "$STACK/apicurio-registry/.complete-$APICURIO_VERSION"
  fi
  if [ ! -f "$VENV/.complete-$(sha1sum "$ROOT/stack/requirements.txt" | cut -c1-12)" ]; then
    say "installing the Python tools (fakesnow, test drivers) into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q -r "$ROOT/stack/requirements.txt" >"$LOGS/pip.log" 2>&1 \
      || die "pip install failed; read $LOGS/pip.log"
    rm -f "$VENV"/.complete-*
    touch "$VENV/.complete-$(sha1sum "$ROOT/stack/requirements.txt" | cut -c1-12)"
  fi
}

# ---------------------------------------------------------------------------------------------
start_postgres() {
  local bin; bin=$(pg_bin) || die "PostgreSQL server not installed; run: scripts/stack.sh install"
  local data=$STACK/pgdata sock=$STACK/pgsock
  mkdir -p "$sock"; chown postgres:postgres "$sock" 2>/dev/null || true
  if [ ! -f "$data/PG_VERSION" ]; then
    say "initialising PostgreSQL in $data"
    mkdir -p "$data"; chown postgres:postgres "$data"
    echo postgres >"$STACK/pgpass"; chown postgres "$STACK/pgpass"
    as_postgres "$bin/initdb" -D "$data" -U postgres --pwfile="$STACK/pgpass" \
      --auth-local=trust --auth-host=scram-sha-256 >"$LOGS/postgres-init.log" 2>&1 \
      || die "initdb failed; read $LOGS/postgres-init.log"
    cat >>"$data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$sock'
wal_level = logical
max_wal_senders = 20
max_replication_slots = 20
EOF
  fi
  if ! as_postgres "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    say "starting PostgreSQL on 127.0.0.1:$PG_PORT"
    touch "$LOGS/postgres.log"; chown postgres "$LOGS/postgres.log" 2>/dev/null || true
    as_postgres "$bin/pg_ctl" -D "$data" -l "$LOGS/postgres.log" -w -t 60 start >/dev/null \
      || die "PostgreSQL did not start; read $LOGS/postgres.log"
  fi
  wait_for PostgreSQL 60 "$LOGS/postgres.log" pg_ready
  PGPASSWORD=postgres PGOPTIONS='-c client_min_messages=warning' psql -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres \
    -v ON_ERROR_STOP=1 -f "$ROOT/docker/init-postgres.sql" >/dev/null \
    || die "could not create the source table; read $LOGS/postgres.log"
}
pg_ready() { PGPASSWORD=postgres psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c 'select 1'; }
as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
stop_postgres() {
  local bin; bin=$(pg_bin) || return 0
  [ -f "$STACK/pgdata/PG_VERSION" ] || return 0
  as_postgres "$bin/pg_ctl" -D "$STACK/pgdata" -m fast -w stop >/dev/null 2>&1 || true
}

# ---------------------------------------------------------------------------------------------
# JVM options for the broker, the Connect worker and Kafka's command-line tools.
JOPTS=(-Xms128m "-Xmx${FLOE_JAVA_HEAP:-768m}" -XX:+UseG1GC -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=$STACK/conf/log4j2.properties" -cp "$STACK/kafka-libs/*")

render_conf() {
  mkdir -p "$STACK/conf"
  local f
  for f in kafka-server.properties connect-distributed.properties log4j2.properties; do
    sed "s|@DATA@|$STACK|g" "$ROOT/stack/conf/$f" >"$STACK/conf/$f"
  done
}

start_kafka() {
  [ -f "$STACK/kafka-libs/.complete" ] || die "Kafka not installed; run: scripts/stack.sh install"
  render_conf
  if [ ! -f "$STACK/kafka-data/meta.properties" ]; then
    say "formatting Kafka KRaft storage"
    local id; id=$(java "${JOPTS[@]}" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)
    java "${JOPTS[@]}" kafka.tools.StorageTool format -t "$id" \
      -c "$STACK/conf/kafka-server.properties" >"$LOGS/kafka-format.log" 2>&1 \
      || die "Kafka storage format failed; read $LOGS/kafka-format.log"
  fi
  if ! pid_alive kafka; then
    say "starting Kafka (KRaft) on 127.0.0.1:9092"
    setsid java "${JOPTS[@]}" kafka.Kafka "$STACK/conf/kafka-server.properties" >"$LOGS/kafka.log" 2>&1 < /dev/null &
    echo $! >"$RUN/kafka.pid"
  fi
  wait_for Kafka 90 "$LOGS/kafka.log" kafka_ready
}
kafka_ready() { (exec 3<>/dev/tcp/127.0.0.1/9092) 2>/dev/null; }

# Apicurio Registry on $REGISTRY_PORT; schemas persist in an H2 file so a restarted registry
# serves the same ids (the Confluent API lives under /apis/ccompat/v7).
start_registry() {
  [ -f "$STACK/apicurio-registry/.complete-$APICURIO_VERSION" ] || die "Apicurio Registry not installed; run: scripts/stack.sh install"
  if ! pid_alive registry; then
    say "starting Apicurio Registry (Schema Registry) on $REGISTRY_URL"
    mkdir -p "$STACK/registry-data"
    setsid java -Xms64m -Xmx384m -Djava.awt.headless=true \
      -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$REGISTRY_PORT" \
      -Dapicurio.datasource.url="jdbc:h2:file:$STACK/registry-data/registry" \
      -jar "$STACK"/apicurio-registry/apicurio-registry-app-*-runner.jar \
      >>"$LOGS/registry.log" 2>&1 </dev/null &
    echo $! >"$RUN/registry.pid"
  fi
  wait_for "Apicurio Registry" 120 "$LOGS/registry.log" registry_ready
}
registry_ready() { curl -sf "$REGISTRY_URL/apis/ccompat/v7/subjects" >/dev/null; }

start_connect() {
  [ -f "$STACK/connect-plugins/debezium-postgres/.complete" ] || die "Debezium not installed; run: scripts/stack.sh install"
  render_conf
  if ! pid_alive connect; then
    say "starting Kafka Connect with Debezium on $CONNECT_URL"
    setsid java "${JOPTS[@]}" org.apache.kafka.connect.cli.ConnectDistributed \
      "$STACK/conf/connect-distributed.properties" >"$LOGS/connect.log" 2>&1 < /dev/null &
    echo $! >"$RUN/connect.pid"
  fi
  wait_for "Kafka Connect" 120 "$LOGS/connect.log" connect_ready
}
connect_ready() {
  curl -sf "$CONNECT_URL/connector-plugins" | grep -q PostgresConnector
}

connector_name() {
  "$VENV/bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["name"])' "$1"
}

# Registers one connector file from docker/, pointed at the local PostgreSQL and registry.
register_connector() {
  local file=$1 name body
  name=$(connector_name "$file")
  body=$("$VENV/bin/python" - "$file" "$PG_PORT" "$REGISTRY_URL" <<'PY'
import json, sys
spec = json.load(open(sys.argv[1]))
config = spec["config"]
config.update({"database.hostname": "127.0.0.1", "database.port": sys.argv[2]})
for k, v in config.items():
    if k.endswith("apicurio.registry.url"):
        config[k] = v.replace("http://schema-registry:8081", sys.argv[3])
print(json.dumps(config))
PY
)
  curl -sf -X PUT -H 'Content-Type: application/json' --data "$body" \
    "$CONNECT_URL/connectors/$name/config" >"$LOGS/connector-register-$name.json" \
    || die "registering connector $name failed; read $LOGS/connect.log"
  wait_for "Debezium connector $name" 90 "$LOGS/connect.log" connector_running "$name"
  say "connector $name is RUNNING"
}
register_connectors() {
  local f
  for f in "${CONNECTOR_FILES[@]}"; do register_connector "$f"; done
}
connector_running() {
  local s; s=$(curl -sf "$CONNECT_URL/connectors/$1/status") || return 1
  echo "$s" | "$VENV/bin/python" -c '
import json, sys
s = json.load(sys.stdin)
ok = s["connector"]["state"] == "RUNNING" and s["tasks"] and all(t["state"] == "RUNNING" for t in s["tasks"])
sys.exit(0 if ok else 1)'
}

# Stops a process started here: SIGTERM, up to 30 s for it to exit, then SIGKILL.
stop_pid() {
  local name=$1
  if pid_alive "$name"; then
    local pid; pid=$(cat "$RUN/$name.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$RUN/$name.pid"
}

# ---------------------------------------------------------------------------------------------
start_fakesnow() {
  [ -x "$VENV/bin/python" ] || die "Python tools not installed; run: scripts/stack.sh install"
  if ! pid_alive fakesnow; then
    say "starting the fakesnow server (Snowflake stand-in) on 127.0.0.1:$FAKESNOW_PORT"
    mkdir -p "$STACK/fakesnow-data"
    setsid "$VENV/bin/python" "$ROOT/stack/fakesnow_server.py" --port "$FAKESNOW_PORT" \
      --latency-ms "${FLOE_FAKESNOW_LATENCY_MS:-0}" \
      --db-path "$STACK/fakesnow-data" >>"$LOGS/fakesnow.log" 2>&1 </dev/null &
    echo $! >"$RUN/fakesnow.pid"
  fi
  wait_for fakesnow 60 "$LOGS/fakesnow.log" fakesnow_ready
}
fakesnow_ready() { curl -s -o /dev/null "http://127.0.0.1:$FAKESNOW_PORT/"; }

# ---------------------------------------------------------------------------------------------
status() {
  local rc=0
  pg_ready >/dev/null 2>&1 && say "postgres  up   127.0.0.1:$PG_PORT" || { say "postgres  DOWN (log: $LOGS/postgres.log)"; rc=1; }
  pid_alive kafka && kafka_ready >/dev/null 2>&1 && say "kafka     up   127.0.0.1:9092" || { say "kafka     DOWN (log: $LOGS/kafka.log)"; rc=1; }
  pid_alive connect && connect_ready >/dev/null 2>&1 && say "connect   up   $CONNECT_URL" || { say "connect   DOWN (log: $LOGS/connect.log)"; rc=1; }
  pid_alive registry && registry_ready && say "registry  up   $REGISTRY_URL" || { say "registry  DOWN (log: $LOGS/registry.log)"; rc=1; }
  local f name
  for f in "${CONNECTOR_FILES[@]}"; do
    name=$(connector_name "$f" 2>/dev/null) || name=$f
    if connector_running "$name" 2>/dev/null; then
      say "connector up   $name (RUNNING)"
    else
      say "connector DOWN $name (log: $LOGS/connect.log)"; rc=1
    fi
  done
  pid_alive fakesnow && fakesnow_ready && say "fakesnow  up   http://127.0.0.1:$FAKESNOW_PORT" || { say "fakesnow  DOWN (log: $LOGS/fakesnow.log)"; rc=1; }
  return $rc
}

up() {
  install
  start_postgres
  start_kafka
  start_registry
  start_connect
  register_connectors
  start_fakesnow
  say "stack is up (logs in $LOGS)"
}

down() {
  stop_pid fakesnow
  stop_pid connect
  stop_pid registry
  stop_pid kafka
  stop_postgres
  say "stack is down"
}

mkdir -p "$STACK" "$LOGS" "$RUN"
case "${1:-}" in
  install) install ;;
  up) up ;;
  down) down ;;
  status) status ;;
  connector) register_connectors ;;
  reset) down; rm -rf "$STACK/pgdata" "$STACK/kafka-data" "$STACK/registry-data" "$STACK/fakesnow-data" "$RUN"; say "data removed" ;;
  start)
    case "${2:-}" in
      postgres) start_postgres ;; kafka) start_kafka ;; registry) start_registry ;;
      connect) start_connect ;; fakesnow) start_fakesnow ;;
      *) die "start what? postgres | kafka | registry | connect | fakesnow" ;;
    esac ;;
  stop)
    case "${2:-}" in
      postgres) stop_postgres ;; kafka) stop_pid kafka ;; registry) stop_pid registry ;;
      connect) stop_pid connect ;; fakesnow) stop_pid fakesnow ;;
      *) die "stop what? postgres | kafka | registry | connect | fakesnow" ;;
    esac ;;
  *) sed -n '2,13p' "$0"; exit 2 ;;
esac
