#!/usr/bin/env bash
# Checks docs/openapi.yaml against the running services with schemathesis (property-based API
# testing): ingest and warmer (with an analyzer, so stats and predictions exist) start on free
# ports against the Kafka at $KAFKA_BOOTSTRAP with topics of their own, the warmer fetching from
# a local `prefetch demo-upstream` that never fails; then every documented operation is called
# with generated valid and invalid inputs. Fails on any 5xx, any status code, content type,
# header or body the document does not describe.
#
#   KAFKA_BOOTSTRAP=127.0.0.1:9092 bash scripts/api-fuzz.sh        (after cargo build)
#
# Binaries from $CARGO_TARGET_DIR/debug (default target/debug); schemathesis from PyPI into a
# venv in the cache directory. SCHEMATHESIS_MAX_EXAMPLES (default 100) bounds the cases per
# operation; a failure prints the reproducing request (curl) and the report directory keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
SCHEMATHESIS=4.32.5
: "${KAFKA_BOOTSTRAP:?set KAFKA_BOOTSTRAP to a running broker}"
bin=${CARGO_TARGET_DIR:-target}/debug
for b in ingest analyzer warmer prefetch; do
  [ -x "$bin/$b" ] || { echo "api-fuzz: $bin/$b missing; cargo build --workspace first"; exit 1; }
done
cache=${SMART_PREFETCH_CACHE:-$HOME/.cache/smart-prefetch}
venv=$cache/venv-schemathesis-$SCHEMATHESIS
if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "schemathesis==$SCHEMATHESIS"
fi

work=$(mktemp -d /tmp/smart-prefetch-api-fuzz.XXXXXX)
pids=()
cleanup() {
  local rc=$?
  if [ $rc -ne 0 ]; then
    echo "api-fuzz: failed ($rc); the services' last log lines:"
    for f in "$work"/*.log; do echo "--- $f"; tail -n 30 "$f"; done
  fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up_port=$(free_port); ingest_port=$(free_port); analyzer_port=$(free_port); warmer_port=$(free_port)

run_id="apifuzz-$(date +%s)-$$"
export PREFETCH_KAFKA_BROKERS=$KAFKA_BOOTSTRAP PREFETCH_LOG_FORMAT=json PREFETCH_LOG_LEVEL=warn
export PREFETCH_TOPIC_QUERY_EVENTS=$run_id.query-events PREFETCH_TOPIC_PREDICTIONS=$run_id.predictions \
  PREFETCH_TOPIC_CONFIG=$run_id.config PREFETCH_TOPIC_STATS=$run_id.stats PREFETCH_TOPIC_DLQ=$run_id.dlq
export PREFETCH_KAFKA_TOPIC_PARTITIONS=2
token=api-fuzz-token
export PREFETCH_API_TOKEN=$token

start() { # name, then the command
  local name=$1; shift
  "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
}
start upstream "$bin/prefetch" demo-upstream --listen "127.0.0.1:$up_port" \
  --error-rate 0 --min-delay 1ms --max-delay 5ms
start analyzer "$bin/analyzer" --listen "127.0.0.1:$analyzer_port" \
  --group-id "$run_id.analyzer" --stats-interval 1s --tick-interval 1s
start warmer "$bin/warmer" --listen "127.0.0.1:$warmer_port" --group "$run_id.warmer" \
  --cache "$work/cache" --upstream-url "http://127.0.0.1:$up_port/{module}/{ticker}"
start ingest "$bin/ingest" --listen "127.0.0.1:$ingest_port" \
  --warmer-url "http://127.0.0.1:$warmer_port"

ingest=http://127.0.0.1:$ingest_port
warmer=http://127.0.0.1:$warmer_port
wait_for() { # what, url
  for _ in $(seq 1 120); do
    curl -fsS -o /dev/null "$2" 2>/dev/null && return 0
    sleep 0.5
  done
  echo "api-fuzz: $1 not ready at $2"; exit 1
}
wait_for ingest "$ingest/readyz"
wait_for warmer "$warmer/readyz"
wait_for analyzer "http://127.0.0.1:$analyzer_port/readyz"
# Some traffic, so status, stats and predictions have something to show, then wait for the
# analyzer's first stats snapshot (before it, action=stats answers 503 no_stats).
curl -fsS -o /dev/null -H 'content-type: application/json' \
  -d '[{"ticker":"AAPL","module":"price"},{"ticker":"MSFT","module":"news","hit":true}]' "$ingest/v1/events"
curl -fsS -o /dev/null "$warmer/v1/cache/price/AAPL"
wait_for "analyzer stats" "$ingest/api/v1/smart-prefetch?action=stats"

examples=${SCHEMATHESIS_MAX_EXAMPLES:-100}
checks=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance
status=0
for svc in ingest warmer; do
  url=$([ $svc = ingest ] && echo "$ingest" || echo "$warmer")
  echo "==> schemathesis: $svc at $url"
  # From the work directory, so nothing schemathesis keeps lands in the repository.
  (cd "$work" && "$venv/bin/schemathesis" run "$repo/docs/openapi.yaml" --url "$url" --include-tag "$svc" \
    --checks "$checks" --max-examples "$examples" --seed 1 --no-color --generation-database none \
    --header "Authorization: Bearer $token" --request-timeout 20 \
    --report junit --report-dir "$work/report-$svc") || status=$?
done
exit $status
