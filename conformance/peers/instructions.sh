#!/usr/bin/env bash
# Instructions each server executes per request (user space, every thread),
# counted by valgrind's callgrind: unlike a latency, the count does not move
# with what else the machine is doing (a shared virtual machine's steal
# time), so it compares servers, and one build with the next, exactly.
#
#   conformance/peers/instructions.sh [reference|reference-rest|echo|furnace]...
#   (default: reference, echo, furnace)
#
# reference: `conformance serve` (the reference server, ONNX Runtime);
# reference-rest: the same server, its requests over OIP REST (JSON);
# echo: `conformance serve --echo` (tonic/hyper echo servers, no model);
# furnace: furnace-server 0.16.2 (`perf --bench peers` builds it).
# Each server runs under callgrind; 300 `add` requests over OIP gRPC at
# concurrency 1 warm it up, the counters are zeroed, 2000 more are counted.
# Needs valgrind (Debian: apt-get install valgrind).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -q --release -p conformance
bin=target/release/conformance
furnace=target/furnace-peer/release/furnace-peer
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# The transport `count` measures: oip+grpc, or oip+http for reference-rest.
scheme=oip+grpc
count() {
  local name=$1 grpc=$2; shift 2
  valgrind --tool=callgrind --callgrind-out-file="$out/$name.out" "$@" >"$out/$name.log" 2>&1 &
  local pid=$!
  for _ in $(seq 600); do
    if grep -q '^READY ' "$out/$name.log" 2>/dev/null; then
      # READY GRPC REST
      if [ "$scheme" = oip+http ]; then
        grpc=$(awk '/^READY /{print $3; exit}' "$out/$name.log")
      else
        grpc=$(awk '/^READY /{print $2; exit}' "$out/$name.log")
      fi
      break
    fi
    if [ -n "$grpc" ] && (exec 3<>"/dev/tcp/${grpc%:*}/${grpc#*:}") 2>/dev/null; then break; fi
    sleep 0.5
  done
  SERVING_TARGET="$scheme://$grpc" "$bin" perf --concurrency 1 --requests 300 --duration 300 --warmup 0 >/dev/null
  callgrind_control -z "$pid" >/dev/null 2>&1
  SERVING_TARGET="$scheme://$grpc" "$bin" perf --concurrency 1 --requests 2000 --duration 300 --warmup 0 >/dev/null
  callgrind_control -d "$pid" >/dev/null 2>&1
  sleep 1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local total
  total=$(callgrind_annotate "$out/$name.out".1 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}')
  printf '%-10s %8.0f instructions per request\n' "$name" "$((total / 2000))"
}
for server in "${@:-reference echo furnace}"; do
  for s in $server; do
    case $s in
      reference) scheme=oip+grpc count reference "" "$bin" serve --max-msg-mb 512 ;;
      reference-rest) scheme=oip+http count reference-rest "" "$bin" serve --max-msg-mb 512 ;;
      echo) count echo "" "$bin" serve --echo ;;
      furnace)
        [ -x "$furnace" ] || cargo build -q --release --locked --manifest-path conformance/peers/furnace/Cargo.toml --target-dir target/furnace-peer
        http=$(free_port); grpc=$(free_port)
        count furnace "127.0.0.1:$grpc" "$furnace" --http-port "$http" --grpc-port "$grpc" ;;
      *) echo "unknown server '$s': reference, echo or furnace" >&2; exit 2 ;;
    esac
  done
done
