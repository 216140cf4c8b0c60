#!/usr/bin/env bash
# The GPU check: on a machine with CUDA, run the tests marked `gpu` (models equal their CPU results,
# the MD engine, the forecaster rollout, OpenMM's CUDA platform with TorchForce and PythonForce, a GP
# saddle search on the device), then the benchmarks at GPU sizes (MD, neighbour lists, the GP-dimer on
# CPU vs GPU), and print a summary. About 6-10 min.
#
#     bash scripts/check_gpu.sh [OUTPUT_FOLDER]
#
# Without CUDA it says so and exits 0 after the (skipped) gpu tests, so it can be tried on a CPU first.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu-check}"
mkdir -p "$out"
python=${PYTHON:-python}
status=0

has_cuda=$($python -c "import torch; print(int(torch.cuda.is_available()))")
$python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'devices', torch.cuda.device_count(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" | tee "$out/summary.txt"

echo "== gpu tests" | tee -a "$out/summary.txt"
timeout 300 $python -m pytest -m gpu -q -rs tests/test_gpu.py 2>&1 | tee "$out/tests.txt" | tail -15
tail -1 "$out/tests.txt" >> "$out/summary.txt"
if grep -q "failed\|error" "$out/tests.txt"; then status=1; fi

if [ "$has_cuda" = "1" ]; then
    echo "== benchmarks (cuda)" | tee -a "$out/summary.txt"
    timeout 150 $python scripts/benchmark_md.py --device cuda --repeats 5 --cu2048 2>&1 | tee "$out/benchmark_md.txt" | tail -25
    timeout 90 $python scripts/benchmark_neighbors.py 2>&1 | tee "$out/benchmark_neighbors.txt" | tail -15
    # the GP-dimer with its GP and inner loop on the CPU and on the GPU (EMT force calls on the CPU)
    timeout 150 $python scripts/benchmark_gp_overhead.py --devices cpu,cuda --cases pt-heptamer --methods gp-dimer \
        --starts 1 2>&1 | tee "$out/benchmark_gp_overhead.txt" | tail -8
    cat "$out/benchmark_md.txt" "$out/benchmark_neighbors.txt" "$out/benchmark_gp_overhead.txt" >> "$out/summary.txt"
else
    echo "no CUDA device here: the gpu tests were skipped and no GPU benchmark ran" | tee -a "$out/summary.txt"
fi
echo "summary: $out/summary.txt"
exit $status
