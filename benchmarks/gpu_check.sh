#!/usr/bin/env bash
# Issue 19's GPU check in one run (device tool: `bash benchmarks/gpu_check.sh`, from the repo root).
# Writes every result to $OUT (default /tmp/gpu_check). Each step has its own time limit so the whole
# script fits one 600 s call; a step that fails or times out is recorded and the next one still runs.
# Needs a CUDA build of torch (it ships Triton); POT / pykdtree are optional there (fallbacks exist).
set -u
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET  # real kernels on the GPU

step() {  # step NAME SECONDS COMMAND...: run with a limit, keep output and exit status
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
  echo "$name: exit $? after $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
}

{ nvidia-smi; python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"; } >"$OUT/env.txt" 2>&1
# 1. Correctness on real CUDA: the gpu-marked tests, then every Triton kernel test on CUDA tensors.
step pytest_gpu 100 python -m pytest -q -m gpu tests/
step triton_kernels_cuda 80 python -m pytest -q tests/geometry/test_triton_kernels.py tests/geometry/test_point_ops_pvd.py
# 2. PVD config training speed, Triton kernels against the PyTorch ops on the same GPU (goal: >= 2x 4.0 it/s).
step bench_denoisers 90 python benchmarks/bench_denoisers.py --models pvcnn_pvd pvcnn_small pointnet_small --devices cuda --batch 16 --points 2048
SHAPEDIFF_TRITON=0 step bench_denoisers_no_triton 80 python benchmarks/bench_denoisers.py --models pvcnn_pvd pvcnn_small --devices cuda --batch 16 --points 2048
# 3. Share of the step in point ops (is the small PVCNN still launch-bound?).
step profile_point_ops 60 python benchmarks/profile_point_ops.py --models pvcnn_small pvcnn_pvd --device cuda
# 4. Scaling with N and B on the GPU.
step bench_scaling 150 python benchmarks/bench_scaling.py --device cuda --budget 20
cat "$OUT/summary.txt"
