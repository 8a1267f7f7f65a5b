#!/usr/bin/env bash
# `make run`: the whole system on its embedded defaults, on loopback.
# Starts a relay (SQLite), creates a connection and a workspace API key with
# the CLI, starts a demo target and an agent whose allowlist permits it,
# sends a request through the CONNECT proxy, prints the status, and runs
# until Ctrl-C, stopping everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."

RELAY_PORT=${POSTERN_DEMO_RELAY_PORT:-18080}
PROXY_PORT=${POSTERN_DEMO_PROXY_PORT:-18081}
TARGET_PORT=${POSTERN_DEMO_TARGET_PORT:-18090}
STATUS_PORT=${POSTERN_DEMO_STATUS_PORT:-17070}
RUN=.run
BIN=bin
SERVER="http://127.0.0.1:${RELAY_PORT}"

for port in "$RELAY_PORT" "$PROXY_PORT" "$TARGET_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/${port}") 2>/dev/null; then
    echo "error: port ${port} on 127.0.0.1 is in use; stop what holds it or set POSTERN_DEMO_*_PORT" >&2
    exit 1
  fi
done

rm -rf "$RUN"
mkdir -p "$RUN"
chmod 700 "$RUN"
pids=()
cleanup() {
  trap - EXIT INT TERM
  echo
  echo "stopping demo..."
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "stopped. logs were in $RUN/"
}
trap cleanup EXIT INT TERM

wait_http() { # url what
  for _ in $(seq 1 100); do
    if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "error: $2 did not come up; see $RUN/*.log" >&2
  exit 1
}
json_field() { # field < json
  sed -n "s/.*\"$1\": *\"\([^\"]*\)\".*/\1/p" | head -n 1
}

echo "==> starting relay (SQLite in $RUN/relay) on $SERVER, proxy on 127.0.0.1:${PROXY_PORT}"
"$BIN/postern-relay" serve --data "$RUN/relay" --listen "127.0.0.1:${RELAY_PORT}" \
  --proxy-listen "127.0.0.1:${PROXY_PORT}" >"$RUN/relay.log" 2>&1 &
pids+=($!)
wait_http "$SERVER/healthz" "relay"

export POSTERN_SERVER="$SERVER"
ADMIN=(--admin-key-file "$RUN/relay/admin.key")
echo "==> creating connection 'demo' in workspace 'demo' (CLI)"
conn_json=$("$BIN/postern-relay" connections create demo --workspace demo --json "${ADMIN[@]}")
CONN_ID=$(json_field id <<<"$conn_json")
umask 077
json_field agent_token <<<"$conn_json" >"$RUN/agent.token"
echo "    connection id: $CONN_ID (agent token written to $RUN/agent.token, mode 0600)"

echo "==> creating a workspace API key for the product (CLI)"
key_json=$("$BIN/postern-relay" api-keys create product --workspace demo --json "${ADMIN[@]}")
API_KEY=$(json_field key <<<"$key_json")
# curl reads the credentials from a file, so they never appear in argv.
printf 'proxy-user = "%s:%s"\n' "$CONN_ID" "$API_KEY" >"$RUN/curl-proxy.conf"
printf 'header = "Authorization: Bearer %s"\n' "$API_KEY" >"$RUN/curl-api.conf"

echo "==> starting demo target on 127.0.0.1:${TARGET_PORT}"
"$BIN/demotarget" --listen "127.0.0.1:${TARGET_PORT}" >"$RUN/target.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:${TARGET_PORT}/" "demo target"

cat >"$RUN/agent.yaml" <<YAML
relay_url: ws://127.0.0.1:${RELAY_PORT}
token_file: agent.token
status_listen: 127.0.0.1:${STATUS_PORT}
allow:
  # Loopback is always blocked unless an allow rule names the address.
  - ip: 127.0.0.1
    ports: [${TARGET_PORT}]
YAML
echo "==> starting agent ($RUN/agent.yaml allows 127.0.0.1:${TARGET_PORT} only)"
"$BIN/postern-agent" run --config "$RUN/agent.yaml" >"$RUN/agent.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  if "$BIN/postern-relay" connections status "$CONN_ID" "${ADMIN[@]}" 2>/dev/null | grep -q '^tunnel: *connected'; then
    break
  fi
  sleep 0.1
done

echo "==> request through the tunnel: curl -p -x 127.0.0.1:${PROXY_PORT} http://127.0.0.1:${TARGET_PORT}/"
curl -fsS -p -x "http://127.0.0.1:${PROXY_PORT}" -K "$RUN/curl-proxy.conf" "http://127.0.0.1:${TARGET_PORT}/"

echo "==> a target the allowlist does not name is refused with a reason (raw CONNECT 10.1.2.3:443):"
# bash builtins only, so the key stays out of every process's argv.
proxy_auth=$(printf '%s:%s' "$CONN_ID" "$API_KEY" | base64 | tr -d '\n')
exec 3<>"/dev/tcp/127.0.0.1/${PROXY_PORT}"
printf 'CONNECT 10.1.2.3:443 HTTP/1.1\r\nHost: 10.1.2.3:443\r\nProxy-Authorization: Basic %s\r\nConnection: close\r\n\r\n' "$proxy_auth" >&3
timeout 5 cat <&3 | tr -d '\r' | sed 's/^/    /' || true
exec 3<&-
echo

echo "==> status (GET /v1/connections/$CONN_ID/status): postern-relay connections status $CONN_ID --json"
"$BIN/postern-relay" connections status "$CONN_ID" --json "${ADMIN[@]}"

cat <<MORE

The demo is running. Try more in another terminal, from $(pwd):
  curl -p -x http://127.0.0.1:${PROXY_PORT} -K $RUN/curl-proxy.conf http://127.0.0.1:${TARGET_PORT}/
  curl -v -p -x http://127.0.0.1:${PROXY_PORT} -K $RUN/curl-proxy.conf http://10.1.2.3:443/   # 403 ALLOWLIST_MISSING
  POSTERN_SERVER=$SERVER $BIN/postern-relay connections list --admin-key-file $RUN/relay/admin.key
  POSTERN_SERVER=$SERVER $BIN/postern-relay connections status $CONN_ID --base-url https://gitlab.example --admin-key-file $RUN/relay/admin.key
  curl -K $RUN/curl-api.conf '$SERVER/v1/connections/$CONN_ID/status?base_url=https://gitlab.example:443'
  $BIN/postern-agent validate --config $RUN/agent.yaml --explain 127.0.0.1:${TARGET_PORT}
Logs: $RUN/relay.log, $RUN/agent.log, $RUN/target.log. Ctrl-C stops everything.
MORE
wait "${pids[0]}"
