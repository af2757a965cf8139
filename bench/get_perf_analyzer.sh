#!/usr/bin/env bash
# Fetch Triton's perf_analyzer and the libraries it loads into DIR (default: .perf-analyzer):
#   DIR/bin/perf_analyzer  from the tritonclient==2.51.0 wheel (later wheels need a newer glibc),
#                          installed with --target so that it never replaces the venv's tritonclient
#   DIR/lib/libb64.so.0d   from Debian's libb64-0d
#   DIR/lib/libcudart.so.12 from PyPI's nvidia-cuda-runtime-cu12 (loaded even against a CPU server)
# Then: PERF_ANALYZER=DIR/bin/perf_analyzer PERF_ANALYZER_LIBS=DIR/lib python -m bench --perf-analyzer
set -euo pipefail
dir=$(realpath -m "${1:-.perf-analyzer}")
python=${PYTHON:-python}
mkdir -p "$dir/lib" "$dir/tmp"
"$python" -m pip install --quiet --no-deps --target "$dir/tmp/tritonclient" "tritonclient==2.51.0"
"$python" -m pip install --quiet --no-deps --target "$dir/tmp/cudart" "nvidia-cuda-runtime-cu12"
mkdir -p "$dir/bin"
cp "$dir/tmp/tritonclient/bin/perf_analyzer" "$dir/bin/perf_analyzer"
cp "$dir"/tmp/cudart/nvidia/cuda_runtime/lib/libcudart.so.12 "$dir/lib/"
(cd "$dir/tmp" && apt-get download libb64-0d >/dev/null && dpkg -x libb64-0d_*.deb b64)
cp "$dir"/tmp/b64/usr/lib/*/libb64.so.0d "$dir/lib/"
rm -rf "$dir/tmp"
echo "PERF_ANALYZER=$dir/bin/perf_analyzer PERF_ANALYZER_LIBS=$dir/lib"
