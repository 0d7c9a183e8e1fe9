#!/usr/bin/env bash
# JouleDB beside PostgreSQL on this machine, in one run:
#
#   TPC-B:        pgbench (-M prepared) vs `joule bench tpcb`, at the same
#                 scale and number of clients (each with one call
#                 outstanding, driven by the same number of threads:
#                 pgbench -c CLIENTS -j THREADS, joule bench --sync
#                 --clients CLIENTS --threads THREADS), once with relaxed durability
#                 (synchronous_commit=off vs the asynchronous command log)
#                 and once with full durability (synchronous_commit=on vs
#                 the synchronous command log);
#   point select: pgbench -S (-M prepared) vs `joule bench kv --mix c`.
#
# Installs PostgreSQL if absent (Debian's package), runs it on a free
# loopback port in a throwaway directory, builds JouleDB in release mode,
# and prints each pair and its ratio.
#
# Settings (environment): CLIENTS (16), THREADS (2), SCALE (1), DURATION
# seconds (15).
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${CLIENTS:-16}
THREADS=${THREADS:-2}
SCALE=${SCALE:-1}
DURATION=${DURATION:-15}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$PGBIN" ] || ! command -v pgbench >/dev/null; then
  echo "installing PostgreSQL ..." >&2
  as_root apt-get install -y -q postgresql >/dev/null
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi
PGUSER_OS=$(id -un)
[ "$(id -u)" = 0 ] && PGUSER_OS=postgres
run_pg() { if [ "$PGUSER_OS" = "$(id -un)" ]; then "$@"; else runuser -u "$PGUSER_OS" -- "$@"; fi; }

WORK=$(mktemp -d)
chmod 755 "$WORK"
PGDATA="$WORK/pg"
mkdir "$PGDATA" && chown "$PGUSER_OS" "$PGDATA" 2>/dev/null || true
PGPORT=$(free_port)
cleanup() {
  run_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate stop >/dev/null 2>&1 || true
  [ -n "${JOULE_PID:-}" ] && kill "$JOULE_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

run_pg "$PGBIN/initdb" -D "$PGDATA" -A trust -U postgres >/dev/null
run_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/log" -w \
  -o "-p $PGPORT -k $PGDATA -c listen_addresses=127.0.0.1 -c shared_buffers=256MB -c max_connections=200" start >/dev/null
PG="-h 127.0.0.1 -p $PGPORT -U postgres"
pgbench $PG -i -q -s "$SCALE" postgres >/dev/null 2>&1

pgbench_tps() { # extra pgbench flags...
  pgbench $PG -M prepared -c "$CLIENTS" -j "$THREADS" -T "$DURATION" "$@" postgres 2>/dev/null \
    | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | tail -1
}
PG_TPCB_OFF=$(PGOPTIONS='-c synchronous_commit=off' pgbench_tps)
PG_TPCB_ON=$(PGOPTIONS='-c synchronous_commit=on' pgbench_tps)
PG_SELECT=$(pgbench_tps -S)

cargo build --release -q -p joule-cli
JOULE=target/release/joule
start_joule() { # command-log mode
  local out="$WORK/joule-$1.out"
  "$JOULE" start --dir "$WORK/joule-$1" --client-port 0 --admin-port 0 --http-port 0 --command-log "$1" >"$out" 2>/dev/null &
  JOULE_PID=$!
  for _ in $(seq 100); do grep -q "JouleDB ready" "$out" 2>/dev/null && break; sleep 0.1; done
  JOULE_PORT=$(sed -n 's/.*client [0-9.]*:\([0-9]*\).*/\1/p' "$out")
}
joule_tps() { # workload args...
  "$JOULE" bench "$@" --servers "127.0.0.1:$JOULE_PORT" --sync --clients "$CLIENTS" --threads "$THREADS" \
    --duration "$DURATION" --warmup 3 --json 2>/dev/null | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["tps"], 1))'
}
start_joule async
J_TPCB_ASYNC=$(joule_tps tpcb --scale "$SCALE")
J_SELECT=$(joule_tps kv --mix c --records $((SCALE * 100000)))
kill "$JOULE_PID"; wait "$JOULE_PID" 2>/dev/null || true
start_joule sync
J_TPCB_SYNC=$(joule_tps tpcb --scale "$SCALE")
kill "$JOULE_PID"; wait "$JOULE_PID" 2>/dev/null || true
JOULE_PID=

ratio() { python3 -c "print(f'{$1 / $2:.2f}' if $2 else 'n/a')"; }
echo "JouleDB vs PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}'): $CLIENTS clients on $THREADS threads, scale $SCALE, ${DURATION} s each, $(nproc) cores, $(date -u '+%Y-%m-%d %H:%M UTC')"
printf '%-44s %12s %12s %7s\n' "workload" "JouleDB TPS" "PG TPS" "ratio"
printf '%-44s %12s %12s %7s\n' "TPC-B, relaxed (async log / sync_commit off)" "$J_TPCB_ASYNC" "$PG_TPCB_OFF" "$(ratio "$J_TPCB_ASYNC" "$PG_TPCB_OFF")"
printf '%-44s %12s %12s %7s\n' "TPC-B, durable (sync log / sync_commit on)" "$J_TPCB_SYNC" "$PG_TPCB_ON" "$(ratio "$J_TPCB_SYNC" "$PG_TPCB_ON")"
printf '%-44s %12s %12s %7s\n' "point select (kv c / pgbench -S)" "$J_SELECT" "$PG_SELECT" "$(ratio "$J_SELECT" "$PG_SELECT")"
