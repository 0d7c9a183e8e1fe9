#!/usr/bin/env bash
# Moving ranges under load, on one node on this machine:
#
#   1. throttled (the default [elastic] settings): the voter bench runs for
#      DURATION seconds, printing a line per second; after WARM seconds
#      `@Rebalance` gives the last partition's slice of the ring to
#      partition 0 and, once that is done, `@Rebalance` (no arguments)
#      moves it back. The seconds while a rebalance ran are marked, so their
#      throughput and p99 can be set beside the others. (With 2 sites this
#      ends with every vote on one site: the placement, not the moving,
#      then halves the throughput; 4 sites on 2 cores keep the cores busy.)
#   2. unthrottled (throughput_mb = 0): a kv table of RECORDS rows, then
#      the same move; `@Statistics REBALANCE` gives the rate.
#
# Builds JouleDB in release mode and runs the node on free loopback ports
# in a throwaway directory. Settings (environment): SITES (4), DURATION
# (40), WARM (10), RECORDS (2000000), and for part 1 the [elastic]
# settings ELASTIC_DURATION_MS and ELASTIC_THROUGHPUT_MB (unset: the
# defaults).
set -euo pipefail
cd "$(dirname "$0")/.."
SITES=${SITES:-4}
DURATION=${DURATION:-40}
WARM=${WARM:-10}
RECORDS=${RECORDS:-2000000}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
cargo build --release -q
J=$PWD/target/release/joule
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

start_node() { # config file
  CLIENT=$(free_port); ADMIN=$(free_port); HTTP=$(free_port)
  rm -rf "$WORK/data"
  "$J" start --config "$1" --sites "$SITES" --dir "$WORK/data" --client-port "$CLIENT" \
    --admin-port "$ADMIN" --http-port "$HTTP" >"$WORK/node.log" 2>&1 &
  NODE=$!
  for _ in $(seq 100); do grep -q "JouleDB ready" "$WORK/node.log" && return; sleep 0.1; done
  cat "$WORK/node.log"; exit 1
}
stop_node() { echo "exec @Shutdown;" | "$J" sql --port "$ADMIN" >/dev/null 2>&1 || true; wait "$NODE" || true; }
admin() { echo "$1" | "$J" sql --port "$ADMIN"; }
status() { admin "exec @Statistics REBALANCE 0;" | awk 'NR == 3 { print $4 }'; }
wait_done() { while [ "$(status)" = RUNNING ]; do sleep 0.2; done; }

echo "== throttled: voter, $SITES sites, rebalancing from second $WARM"
{
  printf '[command_log]\nmode = "async"\n[elastic]\n'
  [ -n "${ELASTIC_DURATION_MS:-}" ] && printf 'duration_ms = %s\n' "$ELASTIC_DURATION_MS"
  [ -n "${ELASTIC_THROUGHPUT_MB:-}" ] && printf 'throughput_mb = %s\n' "$ELASTIC_THROUGHPUT_MB"
  true
} >"$WORK/default.toml"
start_node "$WORK/default.toml"
"$J" bench voter --servers "127.0.0.1:$CLIENT" --duration "$DURATION" --warmup 2 --report-every 1 >"$WORK/bench.log" 2>&1 &
BENCH=$!
sleep $((WARM + 2))
# The last partition's slice of the even ring.
FIRST=$(( -2147483648 + (SITES - 1) * (4294967296 / SITES) ))
START=$(date +%s.%N)
admin "exec @Rebalance $FIRST 2147483647 0;" >/dev/null
wait_done
admin "exec @Rebalance;" >/dev/null
wait_done
END=$(date +%s.%N)
admin "exec @Statistics REBALANCE 0;"
wait "$BENCH"
python3 - "$WORK/bench.log" "$START" "$END" "$WARM" <<'EOF'
import re, sys
log, start, end, warm = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
# Bench seconds are counted from the end of its 2 s warm-up; the rebalance
# started WARM seconds into the measured run.
span = end - start
lines = [l for l in open(log) if re.match(r"\s+[0-9.]+ s:", l)]
steady, during = [], []
for l in lines:
    t = float(l.split()[0])
    tps = float(l.split(":")[1].split()[0])
    p99 = float(re.search(r"p99 ([0-9.]+) ms", l).group(1))
    inside = warm < t <= warm + span + 1
    (during if inside else steady).append((tps, p99))
    print(("REBALANCING " if inside else "            ") + l.rstrip())
if steady and during:
    s = sum(t for t, _ in steady) / len(steady)
    d = sum(t for t, _ in during) / len(during)
    print(f"steady {s:,.0f} TPS; while rebalancing {d:,.0f} TPS ({100 * d / s:.0f} %), "
          f"worst second's p99 {max(p for _, p in during):.2f} ms; rebalances took {span:.1f} s")
EOF
tail -3 "$WORK/bench.log"
stop_node

echo "== unthrottled: kv, $RECORDS records"
printf '[command_log]\nmode = "off"\n[snapshot]\nfrequency_s = 0\n[elastic]\nduration_ms = 50\nthroughput_mb = 0\n' >"$WORK/fast.toml"
start_node "$WORK/fast.toml"
"$J" bench kv --servers "127.0.0.1:$CLIENT" --records "$RECORDS" --duration 1 --warmup 0 >/dev/null
admin "exec @Rebalance 0 2147483647 0;" >/dev/null
wait_done
admin "exec @Statistics REBALANCE 0;"
stop_node
