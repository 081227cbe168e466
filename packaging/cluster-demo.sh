#!/bin/sh
# Three Culex nodes clustered on one Redis, behind HAProxy, on this machine (README.md,
# "Clustering"). Everything lives in ./cluster-demo/; Ctrl-C stops it all.
#
#   node-a, node-b, node-c   127.0.0.1:1884, 1885, 1886 (and 1894-1896 for HAProxy)
#   HAProxy                  127.0.0.1:1883, round robin over the nodes (PROXY protocol v2)
#   Redis                    127.0.0.1:6390 (appendonly yes, appendfsync always)
set -eu
CULEX=${CULEX:-.venv/bin/culex}
DIR=cluster-demo
mkdir -p "$DIR/redis"
pids=""
stop() {
    trap - INT TERM EXIT
    for pid in $pids; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap stop INT TERM EXIT

redis-server --port 6390 --bind 127.0.0.1 --dir "$DIR/redis" --save "" \
    --appendonly yes --appendfsync always --logfile redis.log &
pids="$pids $!"
until redis-cli -p 6390 ping >/dev/null 2>&1; do sleep 0.1; done

port=1884
for node in node-a node-b node-c; do
    mkdir -p "$DIR/$node"
    cat > "$DIR/$node/culex.toml" <<TOML
[[listeners]]
host = "127.0.0.1"
port = $port

[[listeners]]              # behind HAProxy: the PROXY header carries the client's address
host = "127.0.0.1"
port = $((port + 10))
proxy_protocol = true

[storage]
path = "$node.db"

[cluster]
redis = ["redis://127.0.0.1:6390"]
node = "$node"
lease = 5
TOML
    (cd "$DIR/$node" && exec "../../$CULEX" serve --config culex.toml --log-file culex.log) &
    pids="$pids $!"
    port=$((port + 1))
done

cat > "$DIR/haproxy.cfg" <<CFG
defaults
    mode tcp
    timeout connect 5s
    timeout client 120s
    timeout server 120s
frontend mqtt
    bind 127.0.0.1:1883
    default_backend culex
backend culex
    balance roundrobin
    server node-a 127.0.0.1:1894 check send-proxy-v2
    server node-b 127.0.0.1:1895 check send-proxy-v2
    server node-c 127.0.0.1:1896 check send-proxy-v2
CFG
haproxy -q -f "$DIR/haproxy.cfg" &
pids="$pids $!"

echo "cluster-demo: HAProxy on 127.0.0.1:1883, nodes on 1884-1886, Redis on 6390; logs in $DIR/"
echo "  mosquitto_sub -p 1884 -t 'demo/#' -v    # on node-a"
echo "  mosquitto_pub -p 1886 -t demo/x -m hi -q 1    # on node-c"
echo "  mosquitto_pub -p 1883 -t demo/y -m via-haproxy    # any node"
echo "Ctrl-C stops everything."
wait
