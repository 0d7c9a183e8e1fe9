#!/usr/bin/env bash
# Removing a host of the formation under the voter load, every host on
# this machine: three hosts formed with k=1 (2 sites each, 3 partitions of
# two copies); the voter bench runs through hosts 1 and 2 for DURATION
# seconds, a line per second; after WARM seconds `joule cluster remove 0`
# makes host 0's copies again on hosts 1 and 2 (each taken whole from its
# partition's leader while the load goes on) and host 0 leaves. Each
# second is marked with the phase it fell in; the summary gives the
# throughput and p99 while the copies were taken against the seconds
# before, the time the removal took, and the calls that failed.
#
# Builds JouleDB in release mode; hosts on free loopback ports in a
# throwaway directory. Settings (environment): DURATION (60), WARM (20),
# KEEP (set: keep the logs).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-60}
WARM=${WARM:-20}

source bench/lib.sh
J=${JOULE_BIN:-}
if [ -z "$J" ]; then
  cargo build --release -q
  J=$PWD/target/release/joule
fi
WORK=$(mktemp -d)
# KEEP=1 keeps the hosts' logs and the bench's (the directory is printed).
trap 'kill $(jobs -p) 2>/dev/null || true; if [ -n "${KEEP:-}" ]; then echo "logs in $WORK"; else rm -rf "$WORK"; fi' EXIT

start_three_hosts
"$J" bench voter --servers "${CLIENTS[1]},${CLIENTS[2]}" --duration "$DURATION" --warmup 2 --report-every 1 \
  >"$WORK/bench.log" 2>&1 &
BENCH=$!
BEGIN=$(date +%s.%N)
sleep $((WARM + 2))
START=$(date +%s.%N)
"$J" cluster remove 0 --host 127.0.0.1 --port "${ADMINS[1]}"
END=$(date +%s.%N)
wait "$BENCH"
grep -h "takes a copy\|holds a copy of partition\|was removed" "$WORK"/h1.log "$WORK"/h2.log | sort -u
python3 - "$WORK/bench.log" "$BEGIN" "$START" "$END" <<'PY'
import re, sys
log, begin, start, end = sys.argv[1], *map(float, sys.argv[2:])
lines = [l for l in open(log) if re.match(r"\s+[0-9.]+ s:", l)]
# The bench's clock starts after its 2 s warm-up.
t0 = begin + 2
before, during = [], []
for l in lines:
    t = t0 + float(l.split()[0])
    tps = float(l.split(":")[1].split()[0])
    p99 = float(re.search(r"p99 ([0-9.]+) ms", l).group(1))
    inside = start < t <= end + 1
    (during if inside else before if t <= start else []).append((tps, p99))
    print(("REMOVING " if inside else "         ") + l.rstrip())
med = lambda xs: sorted(xs)[len(xs) // 2] if xs else float("nan")
if before and during:
    s, d = sum(t for t, _ in before) / len(before), sum(t for t, _ in during) / len(during)
    print(f"before: {s:,.0f} TPS, p99 median second {med([p for _, p in before]):.1f} ms; while removing "
          f"({end - start:.1f} s): {d:,.0f} TPS ({100 * d / s:.0f} %), p99 median second "
          f"{med([p for _, p in during]):.1f} ms, worst {max(p for _, p in during):.1f} ms")
PY
tail -4 "$WORK/bench.log"
