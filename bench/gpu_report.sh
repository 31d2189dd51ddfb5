#!/usr/bin/env bash
# One command on a GPU machine: runs wgnn's benchmarks and the main job from a bundle made by
# bench/gpu_bundle.sh (release builds made elsewhere), and writes one markdown report.
#
#     ./gpu_report.sh [--allow-cpu] [--out report.md]     # run inside the bundle folder
#
# It refuses a software adapter (llvmpipe and the like: training would run on the CPU) unless
# --allow-cpu. In order: the kernel bench at the MLP's shapes and at 1024³ and 4096³ (4096³ is
# skipped on a CPU adapter), the training bench at batch 32 and 256 (and its CNN row), mnist_gpu
# for 20 epochs and cnn_mnist with its defaults (both --verbose: the autotuner's picks), char_gpt
# with its defaults, and bench/torch_mnist.py, torch_cnn.py and torch_gpt.py (same models, split
# and rows) when python3 can import torch. On an H100/H200 class GPU it takes a few minutes.
set -uo pipefail
cd "$(dirname "$0")"

allow_cpu=0
out="gpu-report.md"
while [ $# -gt 0 ]; do
  case "$1" in
    --allow-cpu) allow_cpu=1 ;;
    --out) out="$2"; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
for b in mnist_gpu cnn_mnist char_gpt kernels training; do
  [ -x "bin/$b" ] || { echo "bin/$b missing: build the bundle with bench/gpu_bundle.sh" >&2; exit 1; }
done

logs=$(mktemp -d)
started=$(date +%s)
# The adapter check: mnist_gpu --require-gpu refuses a software adapter before training.
probe_flags=(--epochs 1 --train-rows 64 --out "$logs/probe")
if ! bin/mnist_gpu --require-gpu "${probe_flags[@]}" >"$logs/probe.txt" 2>&1; then
  if grep -q "software" "$logs/probe.txt" && [ "$allow_cpu" = 1 ]; then
    software=1
  else
    cat "$logs/probe.txt" >&2
    echo "no GPU adapter: rerun with --allow-cpu to report on this one anyway" >&2
    exit 1
  fi
else
  software=0
fi
# Refused, the probe never named its adapter: ask again, now accepting it.
[ "$software" = 1 ] && bin/mnist_gpu "${probe_flags[@]}" >"$logs/probe.txt" 2>&1
adapter=$(grep -m1 '^adapter:' "$logs/probe.txt" | cut -d' ' -f2-)

section() { printf '\n## %s\n\n' "$1" >>"$out"; }
# A command's output as a code block in the report, with its wall time.
run() {
  local title="$1"; shift
  section "$title"
  local t0=$(date +%s.%N)
  "$@" >"$logs/run.txt" 2>&1
  local code=$?
  local t1=$(date +%s.%N)
  printf '`%s` (exit %s, %s s)\n\n```\n' "$*" "$code" "$(awk "BEGIN { printf \"%.1f\", $t1 - $t0 }")" >>"$out"
  grep -v 'XDG_RUNTIME_DIR' "$logs/run.txt" | sed 's/\r/\n/g' | grep -v '^\s*$' | tail -n 80 >>"$out"
  printf '```\n' >>"$out"
  echo "$title: exit $code"
}

{
  echo "# wgnn GPU report"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- adapter: $adapter"
  echo "- host: $(uname -srm), $(nproc) CPU cores"
  if command -v nvidia-smi >/dev/null; then
    echo "- nvidia-smi: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)"
  fi
  [ "$software" = 1 ] && echo "- **a software adapter** (--allow-cpu): these figures are the CPU's, not a GPU's"
} >"$out"

# Kernel rows: the MLP's products, then the square ones.
filters=("784·784x64" "64·64x64" "1024x1024·1024x1024")
[ "$software" = 0 ] && filters+=("4096x4096·4096x4096")
for f in "${filters[@]}"; do
  run "kernel bench: $f" bin/kernels --bench "$f"
done
run "training bench (batch 32 and 256)" bin/training --bench
run "mnist_gpu, 20 epochs" bin/mnist_gpu --verbose --out "$logs/mnist"
run "cnn_mnist, its defaults" bin/cnn_mnist --verbose --out "$logs/cnn_mnist"
run "char_gpt, its defaults" bin/char_gpt --data assets/tinyshakespeare/input.txt --out "$logs/char_gpt"
if python3 -c 'import torch' 2>/dev/null; then
  run "PyTorch eager, same model (bench/torch_mnist.py)" python3 bench/torch_mnist.py
  run "PyTorch eager, cnn_mnist's model (bench/torch_cnn.py)" python3 bench/torch_cnn.py
  run "PyTorch eager, char_gpt's model (bench/torch_gpt.py)" python3 bench/torch_gpt.py
else
  section "PyTorch eager"
  echo "skipped: python3 cannot import torch here" >>"$out"
fi
echo >>"$out"
echo "report written in $(( $(date +%s) - started )) s" >>"$out"
echo "wrote $out"
