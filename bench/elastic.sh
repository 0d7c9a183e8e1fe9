#!/usr/bin/env bash
# Scaling a cluster out and back in under the voter load, every host on
# this machine (k=0, 2 sites each):
#
#   host 0 starts alone with --elastic; the voter bench runs through it for
#   DURATION seconds, a line per second. After WARM seconds host 1 is added
#   (--add --join), and once its partitions joined and the rebalance that
#   follows is done and STEADY seconds passed, host 2; STEADY seconds
#   later `joule cluster remove 2` takes host 2 out again (its ranges drain
#   back, it leaves). Each second is marked with the phase it fell in; the
#   summary gives each phase's throughput against the steady states before
#   and after it. Phases the load does not reach are skipped (a move still
#   running when the load ends is left to finish unmeasured). Every 2 s the
#   rebalance's share of busy time and the p99 it steers by are sampled
#   (`@Statistics REBALANCE` BUSY_PERCENT, LOAD_P99) and summarized. The
#   bench also counts every call under the phase it ended in (`--phase-file`)
#   and ends with each phase's p99 over all its calls.
#
# Builds JouleDB in release mode; hosts on free loopback ports in a
# throwaway directory. Settings (environment): DURATION (300), WARM (10), STEADY (15),
# ELASTIC_DURATION_MS, ELASTIC_THROUGHPUT_MB, ELASTIC_BUSY_PERCENT and
# ELASTIC_TARGET_P99_MS (unset: the defaults).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-300}
WARM=${WARM:-10}
STEADY=${STEADY:-15}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
cargo build --release -q
J=$PWD/target/release/joule
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
{
  printf '[elastic]\n'
  [ -n "${ELASTIC_DURATION_MS:-}" ] && printf 'duration_ms = %s\n' "$ELASTIC_DURATION_MS"
  [ -n "${ELASTIC_THROUGHPUT_MB:-}" ] && printf 'throughput_mb = %s\n' "$ELASTIC_THROUGHPUT_MB"
  [ -n "${ELASTIC_BUSY_PERCENT:-}" ] && printf 'busy_percent = %s\n' "$ELASTIC_BUSY_PERCENT"
  [ -n "${ELASTIC_TARGET_P99_MS:-}" ] && printf 'target_p99_ms = %s\n' "$ELASTIC_TARGET_P99_MS"
  true
} >"$WORK/joule.toml"

ADMINS=()
start_host() { # index, extra flags...
  local i=$1; shift
  local client admin http internal
  client=$(free_port); admin=$(free_port); http=$(free_port); internal=$(free_port)
  "$J" start --config "$WORK/joule.toml" --sites 2 --dir "$WORK/h$i" --client-port "$client" \
    --admin-port "$admin" --http-port "$http" --internal-port "$internal" "$@" >"$WORK/h$i.log" 2>&1 &
  for _ in $(seq 300); do grep -q "JouleDB ready" "$WORK/h$i.log" && break; sleep 0.1; done
  grep -q "JouleDB ready" "$WORK/h$i.log" || { cat "$WORK/h$i.log"; exit 1; }
  ADMINS[$i]=$admin
  [ "$i" = 0 ] && { CLIENT0="127.0.0.1:$client"; JOIN="127.0.0.1:$internal"; }
  true
}
rebalance_status() { echo "exec @Statistics REBALANCE 0;" | "$J" sql --port "${ADMINS[0]}" | awk 'NR == 3 { print $4 }'; }
joined() { # the event line for partitions a..b
  for _ in $(seq 600); do grep -q "partitions $1 joined" "$WORK/h0.log" && break; sleep 0.1; done
  sleep 0.5
  while [ "$(rebalance_status)" = RUNNING ] && bench_running; do sleep 0.2; done
}
bench_running() { kill -0 "$BENCH" 2>/dev/null; }
now() { date +%s.%N; }

phase() { echo "$1" >"$WORK/phase"; }
start_host 0 --elastic
phase "1 host"
"$J" bench voter --servers "$CLIENT0" --duration "$DURATION" --warmup 2 --report-every 1 \
  --phase-file "$WORK/phase" >"$WORK/bench.log" 2>&1 &
BENCH=$!
BEGIN=$(now)
sleep $((WARM + 2))
( while bench_running; do
    echo "$(now) $(echo "exec @Statistics REBALANCE 0;" | "$J" sql --port "${ADMINS[0]}" 2>/dev/null |
      awk 'NR == 3 && NF > 3 { print $4, $(NF-1), $NF }')" >>"$WORK/share.log"
    sleep 2
  done ) &
T1=$(now); phase "adding host 1"; start_host 1 --add --join "$JOIN"; joined 2..3; T2=$(now); phase "2 hosts"
T3=1e18; T4=1e18; T5=1e18; T6=1e18
if bench_running; then
  sleep "$STEADY"; T3=$(now); phase "adding host 2"; start_host 2 --add --join "$JOIN"; joined 4..5; T4=$(now)
  phase "3 hosts"
fi
if bench_running; then
  sleep "$STEADY"; T5=$(now); phase "removing host 2"
  "$J" cluster remove 2 --host 127.0.0.1 --port "${ADMINS[0]}"; T6=$(now); phase "2 hosts again"
fi
echo "exec @Statistics REBALANCE 0;" | "$J" sql --port "${ADMINS[0]}"
wait "$BENCH"
python3 - "$WORK/share.log" <<'PY'
import sys
running = [l.split() for l in open(sys.argv[1]) if len(l.split()) == 4 and l.split()[1] == "RUNNING"]
if running:
    shares = sorted(float(r[2]) for r in running)
    p99s = sorted(float(r[3]) for r in running if float(r[3]) >= 0)
    mid = lambda v: v[len(v) // 2] if v else float("nan")
    print(f"rebalance share of busy time while running ({len(shares)} samples): lowest {shares[0]:.1f} %, "
          f"median {mid(shares):.1f} %, highest {shares[-1]:.1f} %; the load's p99 it steered by: median "
          f"{mid(p99s):.2f} ms, highest {p99s[-1] if p99s else float('nan'):.2f} ms")
PY
python3 - "$WORK/bench.log" "$BEGIN" "$T1" "$T2" "$T3" "$T4" "$T5" "$T6" <<'PY'
import re, sys
log = sys.argv[1]
begin, t1, t2, t3, t4, t5, t6 = (float(x) for x in sys.argv[2:9])
# Bench seconds count from its start (after a 2 s warm-up), about `begin`.
phases = [("1 host", 0, t1), ("adding host 1", t1, t2), ("2 hosts", t2, t3), ("adding host 2", t3, t4),
          ("3 hosts", t4, t5), ("removing host 2", t5, t6), ("2 hosts again", t6, 1e18)]
per = {p[0]: [] for p in phases}
for l in open(log):
    if not re.match(r"\s+[0-9.]+ s:", l):
        continue
    t = begin + 2 + float(l.split()[0])
    tps = float(l.split(":")[1].split()[0])
    p99 = float(re.search(r"p99 ([0-9.]+) ms", l).group(1))
    name = next((n for n, a, b in phases if a < t <= b), "1 host")
    per[name].append((tps, p99))
    print(f"{name:>16} {l.rstrip()}")
mean = lambda rows: sum(t for t, _ in rows) / len(rows) if rows else 0
before = {"adding host 1": "1 host", "adding host 2": "2 hosts", "removing host 2": "3 hosts"}
after = {"adding host 1": "2 hosts", "adding host 2": "3 hosts", "removing host 2": "2 hosts again"}
for name, a, b in phases:
    rows = per[name]
    if not rows:
        continue
    tps = mean(rows)
    took = f", took {b - a:.1f} s" if 0 < a and b < 1e17 else ""
    vs = "".join(
        f" ({100 * tps / mean(per[other[name]]):.0f} % of {other[name]})"
        for other in (before, after)
        if name in other and per[other[name]]
    )
    print(f"{name:>16}: {tps:>9,.0f} TPS{vs}, worst second's p99 {max(p for _, p in rows):.2f} ms, "
          f"median second's p99 {sorted(p for _, p in rows)[len(rows) // 2]:.2f} ms{took}")
PY
sed -n '/^voter (/,$p' "$WORK/bench.log"
