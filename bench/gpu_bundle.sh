#!/usr/bin/env bash
# Builds what bench/gpu_report.sh runs, into one folder to carry to a GPU machine that has no
# Rust toolchain or package registry: the release builds of mnist_gpu, cnn_mnist, char_gpt and the
# two benchmark harnesses, the MNIST archive, Tiny Shakespeare, the plot font, the PyTorch
# side-by-sides and the report script.
#
#     bench/gpu_bundle.sh [BUNDLE]        # default target/gpu-bundle
#
# Then, on the GPU machine: BUNDLE/gpu_report.sh (see that script).
set -euo pipefail
cd "$(dirname "$0")/.."
bundle="${1:-target/gpu-bundle}"

cargo build --release --example mnist_gpu --example cnn_mnist --example char_gpt
# The bench executables' paths, from cargo's own report (their names carry a hash).
benches=$(cargo bench --no-run --bench kernels --bench training --message-format=json 2>/dev/null |
  python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "bench" in m["target"]["kind"]:
        print(m["target"]["name"], m["executable"])
')

rm -rf "$bundle"
mkdir -p "$bundle/bin" "$bundle/assets" "$bundle/bench"
cp target/release/examples/mnist_gpu target/release/examples/cnn_mnist target/release/examples/char_gpt "$bundle/bin/"
while read -r name path; do cp "$path" "$bundle/bin/$name"; done <<<"$benches"
cp assets/mnist.npz "$bundle/assets/"
cp -r assets/fonts assets/tinyshakespeare "$bundle/assets/"
cp bench/torch_mnist.py bench/torch_cnn.py bench/torch_gpt.py "$bundle/bench/"
cp bench/gpu_report.sh "$bundle/"
echo "bundle in $bundle: $(ls "$bundle/bin" | tr '\n' ' ')"
