#!/usr/bin/env bash
# Runs a real Apache Kafka 4.x broker (one combined broker+controller node, KRaft) from the jars
# on Maven Central, for tests, CI and benchmarks. No Docker, no system package.
#
#   scripts/kafka.sh start    resolve jars (first time), format storage (first time), start, wait
#   scripts/kafka.sh stop     stop the broker started from the same data dir
#   scripts/kafka.sh status   exit 0 when the broker answers
#   scripts/kafka.sh fetch    only resolve the jars
#
# Environment (all optional):
#   KAFKA_VERSION  Kafka release to run                      (default 4.1.1)
#   KAFKA_PORT     client listener on 127.0.0.1; controller is +1   (default 9092)
#   KAFKA_DATA     log dirs, pid and log file                (default /tmp/smart-prefetch-kafka-$KAFKA_PORT)
#   KAFKA_CACHE    where resolved jars are kept              (default ~/.cache/smart-prefetch)
#   KAFKA_HEAP     JVM heap                                  (default 512m)
#   KAFKA_WAIT     seconds to wait for the broker to answer  (default 90)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
version=${KAFKA_VERSION:-4.1.1}
port=${KAFKA_PORT:-9092}
controller_port=$((port + 1))
data=${KAFKA_DATA:-/tmp/smart-prefetch-kafka-$port}
cache=${KAFKA_CACHE:-$HOME/.cache/smart-prefetch}
lib=$cache/kafka-$version/lib
heap=${KAFKA_HEAP:-512m}
wait_s=${KAFKA_WAIT:-90}
pidfile=$data/kafka.pid
logfile=$data/kafka.log

say() { echo "kafka.sh: $*" >&2; }

fetch() {
  if [ -f "$lib/.complete" ]; then return 0; fi
  command -v mvn >/dev/null || { say "mvn not found (apt-get install maven)"; exit 1; }
  say "resolving org.apache.kafka:kafka_2.13:$version from Maven Central into $lib"
  rm -rf "$lib"
  mvn -q -B -f "$here/kafka/pom.xml" -Dkafka.version="$version" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$lib"
  ls "$lib"/kafka_2.13-"$version".jar >/dev/null
  touch "$lib/.complete"
}

java_cp() { echo "$lib/*"; }

write_config() {
  mkdir -p "$data/logs"
  cat >"$data/server.properties" <<CFG
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$data/logs
num.partitions=1
# One node: every internal topic has a single replica.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Tests create their topics explicitly; an auto-created topic would hide a missing create.
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
log.flush.interval.messages=9223372036854775807
CFG
}

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

start() {
  fetch
  if running; then say "already running (pid $(cat "$pidfile")) on 127.0.0.1:$port"; return 0; fi
  write_config
  if [ ! -f "$data/logs/meta.properties" ]; then
    local cluster_id
    cluster_id=$(java -cp "$(java_cp)" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
    say "formatting KRaft storage in $data/logs (cluster $cluster_id)"
    java -cp "$(java_cp)" -Dlog4j2.configurationFile="$here/kafka/log4j2.properties" \
      kafka.tools.StorageTool format --standalone -t "$cluster_id" -c "$data/server.properties" >>"$logfile" 2>&1 \
      || { say "storage format failed; see $logfile"; tail -n 20 "$logfile" >&2; exit 1; }
  fi
  say "starting Kafka $version on 127.0.0.1:$port (log: $logfile)"
  nohup java -Xms"$heap" -Xmx"$heap" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$here/kafka/log4j2.properties" \
    -cp "$(java_cp)" kafka.Kafka "$data/server.properties" >>"$logfile" 2>&1 </dev/null &
  echo $! >"$pidfile"
  local deadline=$((SECONDS + wait_s))
  until answers && grep -q "Kafka Server started" "$logfile"; do
    if ! running; then say "broker exited during start-up:"; tail -n 30 "$logfile" >&2; exit 1; fi
    if [ $SECONDS -ge $deadline ]; then say "no answer within ${wait_s}s:"; tail -n 30 "$logfile" >&2; exit 1; fi
    sleep 0.5
  done
  say "ready on 127.0.0.1:$port"
}

stop() {
  if ! running; then say "not running"; rm -f "$pidfile"; return 0; fi
  local pid; pid=$(cat "$pidfile")
  kill "$pid"
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$pid" 2>/dev/null && { say "forcing stop of $pid"; kill -9 "$pid"; }
  rm -f "$pidfile"
  say "stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) running && answers ;;
  fetch) fetch ;;
  *) echo "usage: $0 start|stop|status|fetch" >&2; exit 2 ;;
esac
