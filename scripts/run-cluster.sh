#!/usr/bin/env bash
# make run-cluster: a local cluster in one command. etcd on 127.0.0.1:${ETCD_PORT:-2379} and three agents on
# 127.0.0.1:9137..9139 that register in it; Ctrl-C stops them all. Everything listens on loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
HM=.venv/bin/hypermesh
# etcd in its own session: a Ctrl-C (SIGINT to the whole foreground group) must reach the agents first, so they
# revoke their leases; stop() ends etcd after them.
ETCD_PORT=${ETCD_PORT:-2379}
FIRST_PORT=${FIRST_PORT:-9137}
ETCD_URL="http://127.0.0.1:$ETCD_PORT"
DATA=$(mktemp -d /tmp/hypermesh-cluster.XXXXXX)
pids=()
stop() {
  trap - INT TERM EXIT
  # Agents first, so each revokes its lease while etcd still runs; etcd (the first pid) last.
  for ((i = ${#pids[@]} - 1; i >= 1; i--)); do kill "${pids[$i]}" 2>/dev/null || true; done
  for ((i = ${#pids[@]} - 1; i >= 1; i--)); do wait "${pids[$i]}" 2>/dev/null || true; done
  [ ${#pids[@]} -gt 0 ] && kill "${pids[0]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$DATA"
}
trap stop INT TERM EXIT

if (exec 3<>"/dev/tcp/127.0.0.1/$ETCD_PORT") 2>/dev/null; then
  echo "run-cluster: 127.0.0.1:$ETCD_PORT is already in use: stop what serves it or use make run-cluster ETCD_PORT=23790" >&2
  exit 1
fi
setsid etcd --name local --data-dir "$DATA/etcd" --log-level warn \
  --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
  --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
  --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
  --initial-cluster "local=http://127.0.0.1:$((ETCD_PORT + 1))" >"$DATA/etcd.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do
  python3 -c "import urllib.request; urllib.request.urlopen('$ETCD_URL/health', timeout=1)" 2>/dev/null && break
  sleep 0.2
done
for i in 1 2 3; do
  port=$((FIRST_PORT + i - 1))
  "$HM" agent --listen "127.0.0.1:$port" --etcd "$ETCD_URL" --node-id "local-$i" &
  pids+=($!)
done
sleep 2
echo
echo "run-cluster: etcd at $ETCD_URL, agents local-1..3 at http://127.0.0.1:$FIRST_PORT..$((FIRST_PORT + 2))/"
echo "  $HM cluster status --etcd $ETCD_URL"
echo "  $HM cluster assets --etcd $ETCD_URL --json"
echo "  Ctrl-C stops them all"
wait -n "${pids[@]}" || true
