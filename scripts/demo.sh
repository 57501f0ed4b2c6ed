#!/usr/bin/env bash
# The demo: a local nats-server with JetStream, natshook with config/demo.toml, and a
# small receiver (examples/receiver.py) that prints each delivery and whether its
# signature verified. Publishes a few sample events, shows the deliveries (one of
# them retried after a 503) and natshook's metrics, then stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-tools.sh
export PATH="$PWD/.venv/bin:$PATH"

echo "==> building natshook"
cargo build --quiet --bin natshook --example publish
BIN=target/debug/natshook
PUB=target/debug/examples/publish
NATS=nats://127.0.0.1:14222

WORK=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "==> starting nats-server (JetStream) on 127.0.0.1:14222"
nats-server -js -a 127.0.0.1 -p 14222 -sd "$WORK/nats" >"$WORK/nats.log" 2>&1 &
pids+=($!)

echo "==> starting the receiver on 127.0.0.1:18080"
.venv/bin/python3 examples/receiver.py --port 18080 \
  --route /crm hex demo-crm-secret \
  --route /helpdesk standard whsec_ZGVtby1oZWxwZGVzay1zZWNyZXQ= \
  --fail-first ticket.status_changed &
pids+=($!)

echo "==> natshook check"
$BIN check --config config/demo.toml

echo "==> starting natshook"
$BIN run --config config/demo.toml 2>"$WORK/natshook.log" &
pids+=($!)
for _ in $(seq 1 100); do
  if .venv/bin/python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:19464/readyz')" 2>/dev/null; then break; fi
  sleep 0.2
done

echo "==> publishing sample events"
$PUB $NATS crm.lead.created '{"lead_id":"L-1001","name":"Ada Lovelace","source":"webform"}' lead-1001
$PUB $NATS helpdesk.ticket.created '{"ticket_id":"T-42","subject":"Cannot log in","priority":"high"}'
$PUB $NATS helpdesk.ticket.status_changed '{"ticket_id":"T-42","from":"open","to":"pending"}'
# natshook created the stream over the mapped subjects only, so an unmapped subject
# is refused at publish time instead of being stored and silently ignored.
$PUB $NATS crm.lead.deleted '{"lead_id":"L-0999"}' 2>/dev/null \
  || echo "crm.lead.deleted refused: no stream stores it (no [[events]] rule maps it)"

echo "==> waiting for deliveries (the status change is refused once with 503, then retried)"
sleep 4

echo "==> natshook metrics"
.venv/bin/python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:19464/metrics').read().decode())" \
  | grep -E '^natshook_(deliveries_total|unmapped_messages_total|nats_connected)'
echo "==> done: nats-server, natshook and the receiver are stopped"
