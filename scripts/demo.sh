#!/usr/bin/env bash
# `make run`: the whole system on its embedded defaults, on loopback.
# Starts a relay (SQLite), creates a connection and a workspace API key with
# the CLI, starts a demo target and an agent whose allowlist permits it,
# sends a request through the CONNECT proxy, prints the status, and runs
# until Ctrl-C, stopping everything it started and exiting 0.
#
# Every command it prints is the command it ran, with absolute paths, so it
# works when pasted into another terminal from any directory. Credentials
# stay in files (curl -K, --admin-key-file), never in argv.
#
# POSTERN_DEMO_BIN (default bin) is where postern-relay, postern-agent and
# demotarget are; POSTERN_DEMO_DIR (default .run) is where state and logs go.
set -euo pipefail

# In a terminal, Ctrl-C goes to the whole foreground process group: make
# too, which then reports "Error 130" and dies of SIGINT whatever this script
# exits with. With job control (bash -m) this script gets a process group of
# its own and the terminal's foreground, so only the demo sees Ctrl-C and
# `make run` ends with the demo's exit status.
if [[ -t 0 && -t 2 && -z ${POSTERN_DEMO_JOBS:-} ]]; then
  POSTERN_DEMO_JOBS=1 exec bash -m "$0" "$@"
fi
cd "$(dirname "$0")/.."

RELAY_PORT=${POSTERN_DEMO_RELAY_PORT:-18080}
PROXY_PORT=${POSTERN_DEMO_PROXY_PORT:-18081}
TARGET_PORT=${POSTERN_DEMO_TARGET_PORT:-18090}
STATUS_PORT=${POSTERN_DEMO_STATUS_PORT:-17070}
BIN=$(cd "${POSTERN_DEMO_BIN:-bin}" && pwd)
RUN=${POSTERN_DEMO_DIR:-.run}
SERVER="http://127.0.0.1:${RELAY_PORT}"

for port in "$RELAY_PORT" "$PROXY_PORT" "$TARGET_PORT" "$STATUS_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/${port}") 2>/dev/null; then
    echo "error: port ${port} on 127.0.0.1 is in use; stop what holds it or set POSTERN_DEMO_*_PORT" >&2
    exit 1
  fi
done

rm -rf "$RUN"
mkdir -p "$RUN"
chmod 700 "$RUN"
RUN=$(cd "$RUN" && pwd)
pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
# Ctrl-C (or SIGTERM) is how the demo is meant to end: stop everything,
# say so in one line, exit 0.
on_signal() {
  trap - EXIT INT TERM
  stop_all
  if [[ -t 1 ]]; then echo; fi # end the line the terminal's ^C is on
  echo "demo stopped: relay, agent and demo target are down; logs are in $RUN/"
  exit 0
}
# Any other exit is a failure (or the relay ended on its own): stop what
# was started and keep the exit status.
on_exit() {
  local status=$?
  trap - EXIT INT TERM
  stop_all
  if ((status != 0)); then
    echo "demo failed; stopped what it started; logs are in $RUN/" >&2
  fi
  exit "$status"
}
trap on_signal INT TERM
trap on_exit EXIT

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
show() { # the command, quoted so that pasting it runs it
  printf '  '
  printf '%q ' "$@" | sed 's/ $//'
  echo
}
run_shown() { # print the command, then run it: what is shown is what ran
  show "$@"
  "$@"
}

echo "==> starting relay (SQLite in $RUN/relay) on $SERVER, proxy on 127.0.0.1:${PROXY_PORT}"
"$BIN/postern-relay" serve --data "$RUN/relay" --listen "127.0.0.1:${RELAY_PORT}" \
  --proxy-listen "127.0.0.1:${PROXY_PORT}" >"$RUN/relay.log" 2>&1 &
pids+=($!)
wait_http "$SERVER/healthz" "relay"

RELAY=("$BIN/postern-relay")
ADMIN=(--server "$SERVER" --admin-key-file "$RUN/relay/admin.key")
echo "==> creating connection 'demo' in workspace 'demo' (CLI)"
conn_json=$("${RELAY[@]}" connections create demo --workspace demo --json "${ADMIN[@]}")
CONN_ID=$(json_field id <<<"$conn_json")
umask 077
json_field agent_token <<<"$conn_json" >"$RUN/agent.token"
echo "    connection id: $CONN_ID (agent token written to $RUN/agent.token, mode 0600)"

echo "==> creating a workspace API key for the product (CLI)"
key_json=$("${RELAY[@]}" api-keys create product --workspace demo --json "${ADMIN[@]}")
API_KEY=$(json_field key <<<"$key_json")
# curl reads the credentials from a file, so they never appear in argv.
printf 'proxy-user = "%s:%s"\n' "$CONN_ID" "$API_KEY" >"$RUN/curl-proxy.conf"
printf 'header = "Authorization: Bearer %s"\n' "$API_KEY" >"$RUN/curl-api.conf"
echo "    key written to $RUN/curl-proxy.conf and $RUN/curl-api.conf (curl -K), mode 0600"

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
  if "${RELAY[@]}" connections status "$CONN_ID" "${ADMIN[@]}" 2>/dev/null | grep -q '^tunnel: *connected'; then
    break
  fi
  sleep 0.1
done

PROXY_CURL=(curl -p -x "http://127.0.0.1:${PROXY_PORT}" -K "$RUN/curl-proxy.conf")
echo "==> a request through the tunnel:"
run_shown "${PROXY_CURL[@]}" -fsS "http://127.0.0.1:${TARGET_PORT}/"

echo "==> a target the allowlist does not name is refused with a reason (raw CONNECT 10.1.2.3:443):"
# bash builtins only, so the key stays out of every process's argv.
proxy_auth=$(printf '%s:%s' "$CONN_ID" "$API_KEY" | base64 | tr -d '\n')
exec 3<>"/dev/tcp/127.0.0.1/${PROXY_PORT}"
printf 'CONNECT 10.1.2.3:443 HTTP/1.1\r\nHost: 10.1.2.3:443\r\nProxy-Authorization: Basic %s\r\nConnection: close\r\n\r\n' "$proxy_auth" >&3
timeout 5 cat <&3 | tr -d '\r' | sed 's/^/    /' || true
exec 3<&-
echo

echo "==> status (GET /v1/connections/$CONN_ID/status):"
run_shown "${RELAY[@]}" connections status "$CONN_ID" --json "${ADMIN[@]}"

echo
echo "The demo is running. Try more in another terminal (paths are absolute):"
echo "- the request through the tunnel again:"
show "${PROXY_CURL[@]}" "http://127.0.0.1:${TARGET_PORT}/"
echo "- a refused CONNECT: 403 with Postern-Reason: ALLOWLIST_MISSING in the headers:"
show "${PROXY_CURL[@]}" -v "http://10.1.2.3:443/"
echo "- the connections, and one connection's status for a provider's base URL:"
show "${RELAY[@]}" connections list "${ADMIN[@]}"
show "${RELAY[@]}" connections status "$CONN_ID" --base-url https://gitlab.example "${ADMIN[@]}"
echo "- the same status from the API, as the product sees it:"
show curl -fsS -K "$RUN/curl-api.conf" "$SERVER/v1/connections/$CONN_ID/status?base_url=https://gitlab.example:443"
echo "- what the agent's allowlist decides for an address:"
show "$BIN/postern-agent" validate --config "$RUN/agent.yaml" --explain "127.0.0.1:${TARGET_PORT}"
echo "Logs: $RUN/relay.log, $RUN/agent.log, $RUN/target.log. Ctrl-C stops everything."
set +e
wait "${pids[0]}"
echo "error: the relay exited on its own; see $RUN/relay.log" >&2
exit 1
