#!/usr/bin/env bash
# Moving ranges under load on a 3-host, k=1 cluster, every host on this
# machine (3 partitions, each with two copies):
#
#   1. throttled: the voter bench runs through all three hosts for
#      DURATION seconds, printing a line per second; after WARM seconds
#      `@Rebalance` (asked of host 1) gives the last partition's slice of
#      the ring to partition 0 and, once that is done, moves it back. The
#      seconds while a rebalance ran are marked, and the bench gives the
#      p99 over all the calls that ended while one ran (`--phase-file`).
#   2. unthrottled (throughput_mb = 0): a kv table of RECORDS rows, then
#      half the ring to partition 0; `@Statistics REBALANCE` gives the rate.
#   3. unthrottled scale-out (k=0, not run by default): RECORDS kv rows on
#      one `--elastic` host of 2 sites, then a second host joins and the
#      rebalance after its join moves half the rows; the rate as in 2.
#
# Builds JouleDB in release mode; hosts on free loopback ports in a
# throwaway directory. Settings (environment): DURATION (40), WARM (10),
# RECORDS (1000000), PARTS ("1 2": which parts run), FAST_DURATION_MS (50:
# `duration_ms` of the unthrottled parts 2 and 3), and for part 1
# ELASTIC_DURATION_MS, ELASTIC_THROUGHPUT_MB and ELASTIC_TARGET_P99_MS
# (unset: the defaults);
# PERF_OUT=FILE records part 2's move (part 3's: the whole machine from the
# second host's start) with `perf record` into FILE (PERF_CALL_GRAPH: its
# call-graph option, `-g` unless set, e.g. `--call-graph dwarf`); JOULE_BIN=PATH runs
# that binary instead of building this checkout (to compare builds);
# LOGS_TO=DIR keeps the hosts' logs there (partN-hI.log).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-40}
WARM=${WARM:-10}
RECORDS=${RECORDS:-1000000}
FAST_DURATION_MS=${FAST_DURATION_MS:-50}
PARTS=${PARTS:-1 2}

source bench/lib.sh
J=${JOULE_BIN:-}
if [ -z "$J" ]; then
  cargo build --release -q
  J=$PWD/target/release/joule
fi
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

start_cluster() { start_three_hosts --config "$1"; } # config file
stop_cluster() {
  kill "${PIDS[@]}" 2>/dev/null || true; wait "${PIDS[@]}" 2>/dev/null || true
  if [ -n "${LOGS_TO:-}" ]; then mkdir -p "$LOGS_TO"; for f in "$WORK"/h*.log; do cp "$f" "$LOGS_TO/part$PART-$(basename "$f")"; done; fi
}
admin() { echo "$1" | "$J" sql --port "${ADMINS[1]}"; }
status() { admin "exec @Statistics REBALANCE 0;" | awk 'NR == 3 { print $4 }'; }
wait_done() { while [ "$(status)" = RUNNING ]; do sleep 0.2; done; }

part1() {
echo "== throttled: voter on 3 hosts (k=1, 3 partitions), rebalancing from second $WARM"
{
  printf '[elastic]\n'
  [ -n "${ELASTIC_DURATION_MS:-}" ] && printf 'duration_ms = %s\n' "$ELASTIC_DURATION_MS"
  [ -n "${ELASTIC_THROUGHPUT_MB:-}" ] && printf 'throughput_mb = %s\n' "$ELASTIC_THROUGHPUT_MB"
  [ -n "${ELASTIC_TARGET_P99_MS:-}" ] && printf 'target_p99_ms = %s\n' "$ELASTIC_TARGET_P99_MS"
  true
} >"$WORK/default.toml"
start_cluster "$WORK/default.toml"
echo steady >"$WORK/phase"
"$J" bench voter --servers "$SERVERS" --duration "$DURATION" --warmup 2 --report-every 1 \
  --phase-file "$WORK/phase" >"$WORK/bench.log" 2>&1 &
BENCH=$!
sleep $((WARM + 2))
# The last partition's slice of the even ring.
FIRST=$(( -2147483648 + 2 * (4294967296 / 3) ))
START=$(date +%s.%N)
echo rebalancing >"$WORK/phase"
admin "exec @Rebalance $FIRST 2147483647 0;" >/dev/null
# The rows the first move had moved when the load ended.
( while kill -0 "$BENCH" 2>/dev/null; do sleep 0.2; done
  admin "exec @Statistics REBALANCE 0;" | awk 'NR == 3 { print $7, "(" $4 ")" }' >"$WORK/moved_under_load" ) &
SAMPLER=$!
wait_done
admin "exec @Rebalance;" >/dev/null
wait_done
echo steady >"$WORK/phase"
END=$(date +%s.%N)
admin "exec @Statistics REBALANCE 0;"
wait "$BENCH"
python3 - "$WORK/bench.log" "$START" "$END" "$WARM" <<'PY'
import re, sys
log, start, end, warm = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
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
PY
sed -n '/^voter (/,$p' "$WORK/bench.log"
wait "$SAMPLER"
echo "rows the first move had moved when the load ended: $(cat "$WORK/moved_under_load")"
stop_cluster
}

part2() {
echo "== unthrottled: kv, $RECORDS records"
printf '[elastic]\nduration_ms = %s\nthroughput_mb = 0\n' "$FAST_DURATION_MS" >"$WORK/fast.toml"
start_cluster "$WORK/fast.toml"
"$J" bench kv --servers "$SERVERS" --records "$RECORDS" --duration 1 --warmup 0 >/dev/null
local perf=""
if [ -n "${PERF_OUT:-}" ]; then
  perf record -F 499 ${PERF_CALL_GRAPH:--g} -o "$PERF_OUT" -p "$(IFS=,; echo "${PIDS[*]}")" 2>/dev/null & perf=$!
fi
admin "exec @Rebalance 0 2147483647 0;" >/dev/null
wait_done
[ -n "$perf" ] && { kill -INT "$perf"; wait "$perf" || true; }
admin "exec @Statistics REBALANCE 0;"
stop_cluster
}

part3() {
echo "== unthrottled scale-out: kv, $RECORDS records on one --elastic host (2 sites), then a second host joins"
printf '[elastic]\nduration_ms = %s\nthroughput_mb = 0\n' "$FAST_DURATION_MS" >"$WORK/fast.toml"
rm -rf "$WORK"/h*
ADMINS=(); PIDS=()
local join=() first="" perf=""
for i in 0 1; do
  local client admin http internal
  client=$(free_port); admin=$(free_port); http=$(free_port); internal=$(free_port)
  if [ "$i" = 0 ]; then join=(--elastic); first="127.0.0.1:$client"; else join=(--add --join "$JOIN"); fi
  if [ "$i" = 1 ] && [ -n "${PERF_OUT:-}" ]; then
    perf record -F 499 -g -a -o "$PERF_OUT" 2>/dev/null & perf=$!
  fi
  "$J" start --config "$WORK/fast.toml" --sites 2 --dir "$WORK/h$i" --client-port "$client" --admin-port "$admin" \
    --http-port "$http" --internal-port "$internal" "${join[@]}" >"$WORK/h$i.log" 2>&1 &
  PIDS+=($!); ADMINS+=("$admin")
  wait_ready "$WORK/h$i.log"
  if [ "$i" = 0 ]; then
    JOIN="127.0.0.1:$internal"
    "$J" bench kv --servers "$first" --records "$RECORDS" --duration 1 --warmup 0 >/dev/null
  fi
done
for _ in $(seq 600); do grep -q "partitions 2..3 joined" "$WORK/h0.log" && break; sleep 0.1; done
sleep 0.5
while [ "$(echo "exec @Statistics REBALANCE 0;" | "$J" sql --port "${ADMINS[0]}" | awk 'NR == 3 { print $4 }')" = RUNNING ]; do
  sleep 0.2
done
[ -n "$perf" ] && { kill -INT "$perf"; wait "$perf" || true; }
echo "exec @Statistics REBALANCE 0;" | "$J" sql --port "${ADMINS[0]}"
stop_cluster
}

for PART in $PARTS; do "part$PART"; done
