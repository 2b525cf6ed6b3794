#!/usr/bin/env bash
# Runs every fuzz target (or those named) for SECONDS each, on the committed
# seeds plus a corpus kept under corpus/<target>, with the protocol
# dictionary. Stops at the first crash: libFuzzer writes the input under
# artifacts/<target>/ and this script exits non-zero.
#
#   fuzz/run.sh 30                       # every target, 30 s each (CI)
#   fuzz/run.sh 600 oip_rest_binary      # one target, 10 minutes
#
# Works on the stable toolchain (-s none: coverage-guided, no sanitizer);
# RUSTC_BOOTSTRAP=1 FUZZ_SANITIZER=address fuzz/run.sh ... uses ASan.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-30}
shift || true
sanitizer=${FUZZ_SANITIZER:-none}
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi
cargo fuzz build -s "$sanitizer"
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "seeds/$t"
  echo "==> $t: ${seconds}s"
  status=0
  cargo fuzz run -s "$sanitizer" "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$seconds" -dict=dict/protocol.dict -rss_limit_mb=4096 \
    -print_final_stats=1 >"corpus/$t.log" 2>&1 || status=$?
  grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb)' "corpus/$t.log" || true
  if [ "$status" -ne 0 ]; then
    grep -E -A12 'panicked|==[0-9]+==|SUMMARY|Test unit written' "corpus/$t.log" | head -40 >&2
    echo "fuzz target $t failed (exit $status): the input is under fuzz/artifacts/$t" >&2
    exit 1
  fi
done
