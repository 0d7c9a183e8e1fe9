# Shared by the cluster benches (sourced): free loopback ports, waiting for
# a host's ready line, and forming the three-host k=1 cluster the
# rebalance and removal benches run on. Expects $J (the joule binary) and
# $WORK (a throwaway directory).

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Wait for the host logging to LOG to say it is ready (or show its log and
# stop the bench).
wait_ready() {
  for _ in $(seq 300); do grep -q "JouleDB ready" "$1" && return; sleep 0.1; done
  cat "$1"; exit 1
}

# Form three hosts h0..h2 under $WORK, k=1, 2 sites each, on free ports;
# extra `joule start` arguments (a --config, say) come as arguments. Sets
# CLIENTS (client addresses), ADMINS (admin ports), PIDS and SERVERS (the
# client addresses, comma-separated).
start_three_hosts() {
  rm -rf "$WORK"/h*
  CLIENTS=(); ADMINS=(); PIDS=()
  local first_internal="" i client admin http internal
  for i in 0 1 2; do
    client=$(free_port); admin=$(free_port); http=$(free_port); internal=$(free_port)
    local join=()
    if [ -n "$first_internal" ]; then join=(--join "127.0.0.1:$first_internal"); else first_internal=$internal; fi
    "$J" start "$@" --sites 2 --host-count 3 --kfactor 1 --dir "$WORK/h$i" --client-port "$client" \
      --admin-port "$admin" --http-port "$http" --internal-port "$internal" "${join[@]}" >"$WORK/h$i.log" 2>&1 &
    PIDS+=($!); CLIENTS+=("127.0.0.1:$client"); ADMINS+=("$admin")
    sleep 0.5
  done
  for i in 0 1 2; do wait_ready "$WORK/h$i.log"; done
  SERVERS=$(IFS=,; echo "${CLIENTS[*]}")
}
