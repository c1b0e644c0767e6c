# Shared by tests/e2e/ots-up, ots-down and ots-ctl (sourced, not run).
#
# Layout of one run (all under $RUN, gitignored):
#   pids/NAME.pid        "PID STARTTIME" of each process group we started (setsid: pgid == pid)
#   pids/*.started       markers: we started PostgreSQL / RabbitMQ / epmd, so ots-down stops them
#   logs/NAME.log        stdout+stderr of each process
#   ots/                 OTS_DATA_FOLDER (config.yml, ca/, logs/)
#   env.sh               the environment every OTS process runs with
#   takgate.toml         takgate's config; takgate.bound.json its bound addresses
#   admin-token          an OTS administrator's Authentication-Token ([stream.identity] token_file)
#   state.json           everything the pytest suite needs (ports, urls, paths, pids)

E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$E2E_DIR/../.." && pwd)"
RUN="${OTS_E2E_RUN:-$ROOT/tests/artifacts/ots-run}"
PIDS="$RUN/pids"
LOGS="$RUN/logs"
VENV_OTS="${OTS_E2E_VENV:-$ROOT/.venv-ots}"
OTS_VERSION="1.7.14"
OTS_CONSTRAINTS="$E2E_DIR/ots-constraints.txt"
BROWSER_DIR="$E2E_DIR/browser"
UI_DIR="$BROWSER_DIR/ui"

# Database and role only this harness uses (never OTS's own `ots` database), reset by every ots-up.
DB_NAME="takgate_e2e"
DB_USER="takgate_e2e"
DB_PASS="takgate-e2e-pass"
PG_VERSION="15"
PG_CLUSTER="main"

RABBIT_PIDFILE="/var/lib/rabbitmq/mnesia/rabbit@$(hostname -s 2>/dev/null || hostname).pid"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'ots-e2e: %s\n' "$*" >&2; exit 1; }

# port_busy PORT: something listens on 127.0.0.1:PORT or a wildcard address.
port_busy() {
  ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
}

# free_port: a port the kernel just handed out for 127.0.0.1:0 (closed again; racy by nature,
# only for programs that must be told a number: OTS's config.yml).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_for SECONDS WHAT CMD...: poll CMD every 0.2 s until it succeeds; die after SECONDS.
wait_for() {
  local secs="$1" what="$2"
  shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      die "timed out after ${secs}s waiting for $what"
    fi
    sleep 0.2
  done
}

proc_starttime() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null; }

# start_proc NAME CMD...: run CMD in its own session (setsid: its process group id is its pid),
# output to $LOGS/NAME.log, and record "PID STARTTIME" in $PIDS/NAME.pid.
start_proc() {
  local name="$1"
  shift
  mkdir -p "$PIDS" "$LOGS"
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid $(proc_starttime "$pid")" >"$PIDS/$name.pid"
  log "started $name (pid $pid): $*"
}

# pid_of NAME: the recorded pid if that very process (same start time) is still alive.
pid_of() {
  local f="$PIDS/$1.pid" pid start
  [ -f "$f" ] || return 1
  read -r pid start <"$f" || return 1
  [ -n "$pid" ] && [ "$(proc_starttime "$pid")" = "$start" ] || return 1
  echo "$pid"
}

proc_alive() { pid_of "$1" >/dev/null; }

group_alive() { kill -0 -- "-$1" 2>/dev/null; }

# stop_procs NAME...: SIGTERM to each recorded process group at once, SIGKILL to those still
# there after 5 s; forget their pid files.
stop_procs() {
  local name pid pgids=()
  for name in "$@"; do
    if pid="$(pid_of "$name")"; then
      kill -TERM -- "-$pid" 2>/dev/null || true
      pgids+=("$name:$pid")
    fi
    rm -f "$PIDS/$name.pid"
  done
  local entry deadline=$((SECONDS + 5)) left
  while :; do
    left=()
    for entry in "${pgids[@]}"; do group_alive "${entry#*:}" && left+=("$entry"); done
    [ ${#left[@]} -eq 0 ] || [ "$SECONDS" -ge "$deadline" ] && break
    sleep 0.1
  done
  for entry in "${left[@]}"; do
    log "${entry%%:*} (pgid ${entry#*:}) ignored SIGTERM for 5 s: SIGKILL"
    kill -KILL -- "-${entry#*:}" 2>/dev/null || true
  done
  for entry in "${pgids[@]}"; do log "stopped ${entry%%:*} (pgid ${entry#*:})"; done
}

stop_proc() { stop_procs "$1"; }

# RabbitMQ and every rabbitmq CLI call (each one starts epmd if none runs): loopback only.
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export ERL_EPMD_ADDRESS=127.0.0.1
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"

# The environment of every OTS process (ots-run.md env.sh), written by ots-up with this run's ports.
ots_env() {
  # shellcheck disable=SC1091
  . "$RUN/env.sh"
}

api_healthy() {
  curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$OTS_API_PORT/api/health" 2>/dev/null
}

tcp_listening() { port_busy "$1"; }

# The four OTS processes. takgate's `terminate` CoT listener relays to OTS's plain port
# ($OTS_TCP_PORT); its `reoriginate` listener relays to OTS's own `eud_handler --ssl`
# ($OTS_SSL_PORT, an internal loopback port) with a certificate of the client's CN.
start_ots_api() {
  ots_env
  start_proc opentakserver "$VENV_OTS/bin/opentakserver"
  local deadline=$((SECONDS + 120))
  until api_healthy; do
    proc_alive opentakserver || die "opentakserver exited; see $LOGS/opentakserver.log:
$(tail -n 30 "$LOGS/opentakserver.log")"
    [ "$SECONDS" -lt "$deadline" ] || die "opentakserver: /api/health not 200 after 120 s ($LOGS/opentakserver.log)"
    sleep 0.2
  done
}

start_ots_workers() {
  ots_env
  start_proc cot_parser "$VENV_OTS/bin/cot_parser"
  start_proc eud_handler "$VENV_OTS/bin/eud_handler"
  # --ssl: OTS_SSL_STREAMING_PORT from config.yml; it loads ca/ca.pem and the server certificate
  # that opentakserver created on its first start (so it starts after the API is healthy).
  start_proc eud_handler_ssl "$VENV_OTS/bin/eud_handler" --ssl
  local deadline=$((SECONDS + 60))
  until tcp_listening "$OTS_TCP_PORT" && tcp_listening "$OTS_SSL_PORT"; do
    proc_alive eud_handler || die "eud_handler exited; see $LOGS/eud_handler.log"
    proc_alive eud_handler_ssl || die "eud_handler --ssl exited; see $LOGS/eud_handler_ssl.log"
    [ "$SECONDS" -lt "$deadline" ] ||
      die "eud_handler: 127.0.0.1:$OTS_TCP_PORT (TCP) and 127.0.0.1:$OTS_SSL_PORT (--ssl) not both listening after 60 s"
    sleep 0.2
  done
  proc_alive cot_parser || die "cot_parser exited; see $LOGS/cot_parser.log"
}

stop_ots() {
  stop_procs eud_handler_ssl eud_handler cot_parser opentakserver
}
