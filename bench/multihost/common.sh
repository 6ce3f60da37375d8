# Shell helpers shared by the multi-host benchmarks (sourced, not run).

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Until a Socket.IO handshake answers on the port (each try bounded: a request the balancer
# holds must not stall the wait).
wait_serving() { # port
  for _ in $(seq 1 120); do
    curl -fs --max-time 2 "http://127.0.0.1:$1/socket.io/?EIO=4&transport=polling" 2>/dev/null | grep -q '"sid"' && return 0
    sleep 0.25
  done
  echo "port $1 never served Socket.IO" >&2
  return 1
}
