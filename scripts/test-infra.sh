#!/usr/bin/env bash
# The extra servers the TLS, Redis Cluster and Sentinel tests need, on ports of their own (the
# shared RabbitMQ on 5672 and Redis on 6379 are never touched). Called by scripts/services.sh.
# Idempotent: every piece that already answers is left alone, so a second run costs nothing.
#
#   certificates  $CCSYNC_TEST_TLS_DIR (default /tmp/ccsync-test-tls): ca.pem, server.pem/key
#                 (localhost, 127.0.0.1), client.pem/key, wrong-ca.pem (an unrelated CA)
#   RabbitMQ TLS  node ccsync-tls@localhost, amqps on 127.0.0.1:5671 (no plain listener)
#   Redis TLS     127.0.0.1:6390 (tls-port only; client certificates optional; password
#                 ccsync-tls-pw)
#   Redis Cluster 127.0.0.1:7001-7003, three masters, no replicas
#   Sentinel      master 127.0.0.1:6391, replica 127.0.0.1:6392, sentinel 127.0.0.1:26391
#                 watching master name "ccsync-test" (after a failover the roles may be swapped)
set -euo pipefail

TLS_DIR="${CCSYNC_TEST_TLS_DIR:-/tmp/ccsync-test-tls}"
BASE="${CCSYNC_TEST_INFRA_DIR:-/tmp/ccsync-test-infra}"
mkdir -p "$BASE"

say() { echo "test-infra: $*" >&2; }
answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_for() {  # port seconds name
  for _ in $(seq "$(( $2 * 5 ))"); do answers "$1" && return 0; sleep 0.2; done
  say "$3 did not answer on 127.0.0.1:$1 within $2 s (log in $BASE)"
  return 1
}

# 1. Certificates: a CA, a server certificate for localhost/127.0.0.1, a client certificate, and a
#    second CA that signed none of them (the "wrong CA" tests).
if [ ! -s "$TLS_DIR/wrong-ca.pem" ]; then
  say "generating a test CA and certificates in $TLS_DIR"
  rm -rf "$TLS_DIR.tmp" && mkdir -p "$TLS_DIR.tmp" && cd "$TLS_DIR.tmp"
  q() { "$@" >/dev/null 2>&1; }
  q openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=ccsync test CA" \
    -keyout ca.key -out ca.pem
  q openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' > server.ext
  q openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
    -extfile server.ext -out server.pem
  q openssl req -newkey rsa:2048 -nodes -subj "/CN=ccsync-client" -keyout client.key -out client.csr
  printf 'extendedKeyUsage=clientAuth\n' > client.ext
  q openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
    -extfile client.ext -out client.pem
  q openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=some other CA" \
    -keyout wrong-ca.key -out wrong-ca.pem
  rm -f ./*.csr ./*.ext ./*.srl
  # RabbitMQ runs as its own user and must read the server key.
  chmod 0755 . && chmod 0644 ./*
  cd / && rm -rf "$TLS_DIR" && mv "$TLS_DIR.tmp" "$TLS_DIR"
fi

# 2. RabbitMQ with a TLS listener: a second node with its own name, ports, data and config.
if ! answers 5671; then
  say "starting RabbitMQ node ccsync-tls (amqps on 5671)"
  d="$BASE/rabbitmq-tls"
  rm -rf "$d" && mkdir -p "$d/mnesia" "$d/log"
  cat > "$d/rabbitmq.conf" <<EOF
listeners.tcp = none
listeners.ssl.default = 127.0.0.1:5671
ssl_options.cacertfile = $TLS_DIR/ca.pem
ssl_options.certfile = $TLS_DIR/server.pem
ssl_options.keyfile = $TLS_DIR/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = false
management.tcp.port = 15671
EOF
  echo '[].' > "$d/enabled_plugins"
  chown -R rabbitmq:rabbitmq "$d" 2>/dev/null || true
  export RABBITMQ_NODENAME=ccsync-tls@localhost RABBITMQ_NODE_PORT=5670 \
    RABBITMQ_DIST_PORT=25671 RABBITMQ_MNESIA_BASE="$d/mnesia" RABBITMQ_LOG_BASE="$d/log" \
    RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf" RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins" \
    RABBITMQ_PID_FILE="$d/pid"
  rabbitmq-server -detached >/dev/null 2>&1 || true
  rabbitmqctl -n ccsync-tls@localhost await_startup >/dev/null 2>&1 || true
  unset RABBITMQ_NODENAME RABBITMQ_NODE_PORT RABBITMQ_DIST_PORT RABBITMQ_MNESIA_BASE \
    RABBITMQ_LOG_BASE RABBITMQ_CONFIG_FILE RABBITMQ_ENABLED_PLUGINS_FILE RABBITMQ_PID_FILE
  wait_for 5671 90 "RabbitMQ (TLS)"
fi

redis() {  # name port-args...: a throwaway Redis without persistence, logs in $BASE
  local name=$1; shift
  mkdir -p "$BASE/$name"
  redis-server --daemonize yes --bind 127.0.0.1 --save "" --appendonly no --dir "$BASE/$name" \
    --logfile "$BASE/$name/redis.log" --pidfile "$BASE/$name/redis.pid" "$@" >/dev/null
}

# 3. Redis with only a TLS port (client certificates accepted, not required).
if ! answers 6390; then
  say "starting Redis with TLS on 6390"
  redis redis-tls --port 0 --tls-port 6390 --tls-cert-file "$TLS_DIR/server.pem" \
    --tls-key-file "$TLS_DIR/server.key" --tls-ca-cert-file "$TLS_DIR/ca.pem" \
    --tls-auth-clients optional --requirepass ccsync-tls-pw
  wait_for 6390 20 "Redis (TLS)"
fi

# 4. Redis Cluster: three masters, no replicas.
for p in 7001 7002 7003; do
  if ! answers "$p"; then
    say "starting Redis Cluster node $p"
    rm -rf "$BASE/cluster-$p"
    redis "cluster-$p" --port "$p" --cluster-enabled yes --cluster-config-file nodes.conf \
      --cluster-node-timeout 5000
    wait_for "$p" 20 "Redis Cluster node"
  fi
done
if ! redis-cli -p 7001 cluster info 2>/dev/null | grep -q 'cluster_state:ok'; then
  if [ "$(redis-cli -p 7001 cluster info 2>/dev/null | sed -n 's/^cluster_known_nodes:\([0-9]*\).*/\1/p')" = "1" ]; then
    say "creating the cluster 7001-7003"
    redis-cli --cluster create 127.0.0.1:7001 127.0.0.1:7002 127.0.0.1:7003 \
      --cluster-replicas 0 --cluster-yes >/dev/null
  fi
  for _ in $(seq 100); do
    redis-cli -p 7001 cluster info | grep -q 'cluster_state:ok' && break
    sleep 0.2
  done
  redis-cli -p 7001 cluster info | grep -q 'cluster_state:ok' \
    || { say "the cluster on 7001-7003 is not ok"; exit 1; }
fi

# 5. Sentinel: a master, its replica, one sentinel (quorum 1). Started together, so a fresh start
#    always has 6391 as the master; after a test's failover the sentinel keeps track.
if ! answers 26391; then
  say "starting Sentinel (master 6391, replica 6392, sentinel 26391)"
  answers 6391 || redis sentinel-6391 --port 6391
  answers 6392 || redis sentinel-6392 --port 6392 --replicaof 127.0.0.1 6391
  mkdir -p "$BASE/sentinel"
  cat > "$BASE/sentinel/sentinel.conf" <<EOF
port 26391
bind 127.0.0.1
daemonize yes
dir $BASE/sentinel
logfile $BASE/sentinel/sentinel.log
pidfile $BASE/sentinel/sentinel.pid
sentinel monitor ccsync-test 127.0.0.1 6391 1
sentinel down-after-milliseconds ccsync-test 2000
sentinel failover-timeout ccsync-test 10000
EOF
  redis-server "$BASE/sentinel/sentinel.conf" --sentinel >/dev/null
  wait_for 6391 20 "Sentinel's master"
  wait_for 6392 20 "Sentinel's replica"
  wait_for 26391 20 "Sentinel"
fi
say "TLS RabbitMQ (5671), TLS Redis (6390), Redis Cluster (7001-7003) and Sentinel (26391) answer"
