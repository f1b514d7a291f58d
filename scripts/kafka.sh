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
#   KAFKA_SSL_PORT       also listen with TLS on 127.0.0.1:PORT; clients must present a
#                        certificate (mTLS)                                       (default: off)
#   KAFKA_SASL_SSL_PORT  also listen with SASL_SSL (SCRAM-SHA-256/512, PLAIN)     (default: off)
#   KAFKA_SASL_USER      the SCRAM/PLAIN user                                     (default prefetch)
#
# With either TLS port, the first start makes a self-signed CA, a broker certificate for
# 127.0.0.1/localhost and a client certificate in $KAFKA_DATA/tls (openssl), and writes ready
# client properties files for `--kafka-config` (librdkafka keys; the SCRAM password is random,
# made once, and only stored there):
#   $KAFKA_DATA/client-ssl.properties       security.protocol=SSL + CA + client key/certificate
#   $KAFKA_DATA/client-sasl-ssl.properties  security.protocol=SASL_SSL, SCRAM-SHA-256, user, CA
# The SCRAM user is added when the storage is formatted (KRaft keeps SCRAM credentials in its
# metadata log), so enabling SASL_SSL needs a fresh KAFKA_DATA.
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
ssl_port=${KAFKA_SSL_PORT:-}
sasl_port=${KAFKA_SASL_SSL_PORT:-}
sasl_user=${KAFKA_SASL_USER:-prefetch}
tls=$data/tls
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

# A CA, a broker certificate (with a PKCS#12 keystore for the JVM), a client certificate and
# the SCRAM password, each made once per data dir.
make_tls() {
  [ -f "$tls/.complete" ] && return 0
  command -v openssl >/dev/null || { say "openssl not found (apt-get install openssl)"; exit 1; }
  rm -rf "$tls"; mkdir -p "$tls"; chmod 700 "$tls"
  local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  openssl req -x509 "${ec[@]}" -keyout "$tls/ca.key" -out "$tls/ca.pem" -days 3650 \
    -subj "/CN=smart-prefetch test CA" 2>/dev/null
  local who ext
  for who in broker client; do
    if [ $who = broker ]; then ext="subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth"; else ext="extendedKeyUsage=clientAuth"; fi
    openssl req "${ec[@]}" -keyout "$tls/$who.key" -out "$tls/$who.csr" \
      -subj "/CN=smart-prefetch-$who" 2>/dev/null
    openssl x509 -req -in "$tls/$who.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
      -CAcreateserial -days 3650 -out "$tls/$who.pem" -extfile <(echo "$ext") 2>/dev/null
  done
  openssl rand -hex 16 >"$tls/store-password"
  openssl rand -hex 16 >"$tls/sasl-password"
  openssl pkcs12 -export -in "$tls/broker.pem" -inkey "$tls/broker.key" -name broker \
    -out "$tls/broker.p12" -passout "file:$tls/store-password"
  touch "$tls/.complete"
}

# A subshell, so the umask (the files hold the password) stays here.
write_client_properties() (
  umask 077
  if [ -n "$ssl_port" ]; then
    cat >"$data/client-ssl.properties" <<CFG
# scripts/kafka.sh SSL listener (mutual TLS): --brokers 127.0.0.1:$ssl_port --kafka-config $data/client-ssl.properties
security.protocol=SSL
ssl.ca.location=$tls/ca.pem
ssl.certificate.location=$tls/client.pem
ssl.key.location=$tls/client.key
CFG
  fi
  if [ -n "$sasl_port" ]; then
    cat >"$data/client-sasl-ssl.properties" <<CFG
# scripts/kafka.sh SASL_SSL listener: --brokers 127.0.0.1:$sasl_port --kafka-config $data/client-sasl-ssl.properties
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-256
sasl.username=$sasl_user
sasl.password=$(cat "$tls/sasl-password")
ssl.ca.location=$tls/ca.pem
CFG
  fi
)

write_config() {
  mkdir -p "$data/logs"
  local listeners="PLAINTEXT://127.0.0.1:$port" map="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
  if [ -n "$ssl_port" ]; then listeners+=",SSL://127.0.0.1:$ssl_port"; map+=",SSL:SSL"; fi
  if [ -n "$sasl_port" ]; then listeners+=",SASL_SSL://127.0.0.1:$sasl_port"; map+=",SASL_SSL:SASL_SSL"; fi
  cat >"$data/server.properties" <<CFG
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$controller_port
listeners=$listeners,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=$listeners
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=$map
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
  if [ -n "$ssl_port$sasl_port" ]; then
    local pw; pw=$(cat "$tls/store-password")
    cat >>"$data/server.properties" <<CFG
ssl.keystore.type=PKCS12
ssl.keystore.location=$tls/broker.p12
ssl.keystore.password=$pw
ssl.key.password=$pw
ssl.truststore.type=PEM
ssl.truststore.location=$tls/ca.pem
listener.name.ssl.ssl.client.auth=required
CFG
  fi
  if [ -n "$sasl_port" ]; then
    cat >>"$data/server.properties" <<CFG
sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$sasl_user="$(cat "$tls/sasl-password")";
CFG
  fi
  chmod 600 "$data/server.properties"
}

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

start() {
  fetch
  if running; then say "already running (pid $(cat "$pidfile")) on 127.0.0.1:$port"; return 0; fi
  mkdir -p "$data"
  if [ -n "$ssl_port$sasl_port" ]; then make_tls; fi
  write_config
  write_client_properties
  if [ ! -f "$data/logs/meta.properties" ]; then
    local cluster_id scram=()
    if [ -n "$sasl_port" ]; then
      local pw; pw=$(cat "$tls/sasl-password")
      scram=(--add-scram "SCRAM-SHA-256=[name=$sasl_user,password=$pw]"
             --add-scram "SCRAM-SHA-512=[name=$sasl_user,password=$pw]")
    fi
    cluster_id=$(java -cp "$(java_cp)" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
    say "formatting KRaft storage in $data/logs (cluster $cluster_id)"
    java -cp "$(java_cp)" -Dlog4j2.configurationFile="$here/kafka/log4j2.properties" \
      kafka.tools.StorageTool format --standalone -t "$cluster_id" -c "$data/server.properties" \
      "${scram[@]}" >>"$logfile" 2>&1 \
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
  say "ready on 127.0.0.1:$port${ssl_port:+, SSL on $ssl_port ($data/client-ssl.properties)}${sasl_port:+, SASL_SSL on $sasl_port ($data/client-sasl-ssl.properties)}"
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
