#!/usr/bin/env bash
# The production profile on this machine: a Prefect server and an MLflow tracking server, both on
# PostgreSQL, and a process work pool with a worker.
#   bash scripts/stack.sh up | down | status | env | destroy
# `up` creates the databases (<prefix>_prefect, <prefix>_mlflow) when missing, starts what is not
# running, waits until both answer and prints the variables to export; it is idempotent. `down`
# stops only the processes it started (their process groups, from the pid files). `destroy` is
# `down`, then drops both databases and removes HEALTHGYM_STACK_DIR: runs, registry, artifacts gone. Settings, all
# optional: PGHOST, PGPORT, PGUSER (default 127.0.0.1, 5432, postgres; credentials from the
# environment or ~/.pgpass, never written here), HEALTHGYM_STACK_DIR (default .healthgym/stack),
# PREFECT_PORT (4200), MLFLOW_PORT (5000), HEALTHGYM_POOL (healthgym), HEALTHGYM_DB_PREFIX
# (healthgym: the databases are <prefix>_prefect and <prefix>_mlflow), HEALTHGYM_HEARTBEAT_SECONDS
# (60: how often a flow run started by the worker reports it is alive; at least 30) and
# HEALTHGYM_ZOMBIE_SECONDS (300: a flow run silent this long, its worker or machine gone, is
# marked Crashed by the automation `up` installs, so `prefect flow-run retry` can resume it).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN="$ROOT/.venv/bin"
DIR=${HEALTHGYM_STACK_DIR:-$ROOT/.healthgym/stack}
PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
PREFECT_PORT=${PREFECT_PORT:-4200} MLFLOW_PORT=${MLFLOW_PORT:-5000} POOL=${HEALTHGYM_POOL:-healthgym}
DB=${HEALTHGYM_DB_PREFIX:-healthgym}
HEARTBEAT=${HEALTHGYM_HEARTBEAT_SECONDS:-60} ZOMBIE=${HEALTHGYM_ZOMBIE_SECONDS:-300}
ZOMBIE_AUTOMATION="healthgym: crash flow runs without a heartbeat"
PREFECT_URL="http://127.0.0.1:$PREFECT_PORT/api"
MLFLOW_URL="http://127.0.0.1:$MLFLOW_PORT"
export PGHOST PGPORT PGUSER

running() { [ -f "$DIR/$1.pid" ] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null; }

start() {  # name, log, command...: a new session (its own process group), pid file written
  local name=$1
  shift
  if running "$name"; then
    echo "$name: already running (pid $(cat "$DIR/$name.pid"))"
    return
  fi
  setsid "$@" >"$DIR/$name.log" 2>&1 < /dev/null &
  echo $! >"$DIR/$name.pid"
  echo "$name: started (pid $!, log $DIR/$name.log)"
}

wait_for() {  # name, url, seconds
  local deadline=$((SECONDS + $3))
  until curl -fs -o /dev/null "$2"; do
    if ! running "$1"; then
      echo "$1 stopped while starting; its log:" >&2
      tail -n 30 "$DIR/$1.log" >&2
      exit 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      echo "$1 did not answer at $2 within $3 s" >&2
      exit 1
    fi
    sleep 1
  done
}

database() {  # creates the database when missing
  if ! psql -d postgres -tAc "select 1 from pg_database where datname = '$1'" | grep -q 1; then
    psql -d postgres -qc "create database $1" && echo "database $1: created"
  else
    echo "database $1: present"
  fi
}

zombie_automation() {  # Prefect's zombie-flow automation: no heartbeat within ZOMBIE s -> Crashed
  if "$BIN/prefect" automation inspect "$ZOMBIE_AUTOMATION" >/dev/null 2>&1; then
    echo "automation '$ZOMBIE_AUTOMATION': present"
    return
  fi
  "$BIN/prefect" automation create --from-json "$(cat <<JSON
{"name": "$ZOMBIE_AUTOMATION",
 "description": "A flow run whose worker or machine stopped sends no heartbeat; marked Crashed, it can be retried.",
 "trigger": {"type": "event", "posture": "Proactive", "after": ["prefect.flow-run.heartbeat"],
   "expect": ["prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
              "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"],
   "match": {"prefect.resource.id": ["prefect.flow-run.*"]}, "for_each": ["prefect.resource.id"],
   "threshold": 1, "within": $ZOMBIE},
 "actions": [{"type": "change-flow-run-state", "state": "CRASHED",
   "message": "No heartbeat for $ZOMBIE s: its worker or machine stopped. Retry it to resume from its checkpoint."}]}
JSON
)" >/dev/null
  echo "automation '$ZOMBIE_AUTOMATION': created (no heartbeat for $ZOMBIE s -> Crashed)"
}

print_env() {
  echo "export PREFECT_API_URL=$PREFECT_URL"
  echo "export MLFLOW_TRACKING_URI=$MLFLOW_URL"
}

up() {
  mkdir -p "$DIR/artifacts"
  pg_isready -q -h "$PGHOST" -p "$PGPORT" || { echo "PostgreSQL does not answer at $PGHOST:$PGPORT" >&2; exit 1; }
  database "${DB}_prefect"
  database "${DB}_mlflow"
  start prefect-server env PREFECT_API_DATABASE_CONNECTION_URL="postgresql+asyncpg://$PGUSER@$PGHOST:$PGPORT/${DB}_prefect" \
    PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_HOME="$DIR/prefect-home" \
    "$BIN/prefect" server start --host 127.0.0.1 --port "$PREFECT_PORT"
  start mlflow-server env MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false MLFLOW_DISABLE_TELEMETRY=true \
    "$BIN/mlflow" server --backend-store-uri "postgresql+psycopg2://$PGUSER@$PGHOST:$PGPORT/${DB}_mlflow" \
    --artifacts-destination "$DIR/artifacts" --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1
  wait_for prefect-server "$PREFECT_URL/health" 120
  wait_for mlflow-server "$MLFLOW_URL/health" 120
  export PREFECT_API_URL=$PREFECT_URL
  "$BIN/prefect" work-pool inspect "$POOL" >/dev/null 2>&1 || "$BIN/prefect" work-pool create "$POOL" --type process >/dev/null
  zombie_automation
  start worker env PREFECT_API_URL="$PREFECT_URL" MLFLOW_TRACKING_URI="$MLFLOW_URL" PREFECT_FLOWS_HEARTBEAT_FREQUENCY="$HEARTBEAT" \
    "$BIN/prefect" worker start --pool "$POOL" --type process
  echo "Prefect UI and API: http://127.0.0.1:$PREFECT_PORT (database ${DB}_prefect)"
  echo "MLflow UI and API: $MLFLOW_URL (database ${DB}_mlflow, artifacts $DIR/artifacts)"
  echo "Export these to use the stack:"
  print_env
}

down() {
  for name in worker mlflow-server prefect-server; do
    if running "$name"; then
      kill -TERM -- "-$(cat "$DIR/$name.pid")" 2>/dev/null || true
      for _ in $(seq 1 20); do running "$name" || break; sleep 0.5; done
      running "$name" && kill -KILL -- "-$(cat "$DIR/$name.pid")" 2>/dev/null || true
      echo "$name: stopped"
    fi
    rm -f "$DIR/$name.pid"
  done
}

destroy() {
  down
  for db in "${DB}_prefect" "${DB}_mlflow"; do
    psql -d postgres -qc "drop database if exists $db with (force)" && echo "database $db: dropped"
  done
  rm -rf "$DIR"
}

status() {
  local code=0
  for name in prefect-server mlflow-server worker; do
    if running "$name"; then echo "$name: running (pid $(cat "$DIR/$name.pid"))"; else echo "$name: stopped"; code=3; fi
  done
  curl -fsS -o /dev/null "$PREFECT_URL/health" && echo "Prefect API: answering at $PREFECT_URL" || echo "Prefect API: not answering"
  curl -fsS -o /dev/null "$MLFLOW_URL/health" && echo "MLflow API: answering at $MLFLOW_URL" || echo "MLflow API: not answering"
  return $code
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) print_env ;;
  destroy) destroy ;;
  *) echo "usage: bash scripts/stack.sh up | down | status | env | destroy" >&2; exit 2 ;;
esac
