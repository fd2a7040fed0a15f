"""Every Triton kernel compiles for a real GPU target (sm_90 cubin) without a GPU present.

The interpreter tests check what the kernels compute; this checks that Triton's compiler accepts
them (typed loop-carried values, constexpr globals, ...), which the interpreter does not.
"""

from __future__ import annotations

import pytest

triton = pytest.importorskip("triton", reason="Triton not installed (pip install triton, or the dev extra)")

KERNELS = {  # name: (module attribute, signature, constexprs)
    "fps_one_chunk_pvd": ("point_kernels._fps_kernel", "*fp32 *i64 *fp32 *i64 i32 i32", dict(TIE_MOD=512, ONE_CHUNK=True, BLOCK=2048)),
    "fps_streamed": ("point_kernels._fps_kernel", "*fp32 *i64 *fp32 *i64 i32 i32", dict(TIE_MOD=0, ONE_CHUNK=False, BLOCK=1024)),
    "ball_query": ("point_kernels._ball_query_kernel", "*fp32 *fp32 *i64 i32 i32 i32 fp32", dict(BLOCK_S=16, BLOCK_N=128, BLOCK_K=32)),
    "three_nn": ("point_kernels._three_nn_kernel", "*fp32 *fp32 *i64 i32 i32", dict(BLOCK_N=64, BLOCK_M=64)),
    "knn": ("point_kernels._knn_kernel", "*fp32 *fp32 *i32 *i64 i32 i32 i32", dict(BLOCK_N=64, BLOCK_M=128)),
    "gather": ("feature_kernels._gather_kernel", "*fp32 *i64 *fp32 i32 i32 i32", dict(BLOCK_L=64, BLOCK_C=64)),
    "scatter_add": ("feature_kernels._scatter_add_kernel", "*fp32 *i64 *fp32 i32 i32 i32", dict(BLOCK_L=64, BLOCK_C=64)),
    "voxel_sum": ("feature_kernels._voxel_sum_kernel", "*fp32 *i64 *fp32 *fp32 i32 i32 i32", dict(BLOCK_N=64, BLOCK_C=32)),
    "voxel_grad": ("feature_kernels._voxel_grad_kernel", "*fp32 *i64 *fp32 *fp32 i32 i32 i32", dict(BLOCK_N=64, BLOCK_C=32)),
    "devox": ("feature_kernels._devox_kernel", "*fp32 *fp32 *fp32 *fp32 i32 i32 i32", dict(BACKWARD=False, BLOCK_N=64, BLOCK_C=32)),
    "devox_backward": ("feature_kernels._devox_kernel", "*fp32 *fp32 *fp32 *fp32 i32 i32 i32", dict(BACKWARD=True, BLOCK_N=64, BLOCK_C=32)),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(KERNELS))
def test_kernel_compiles_for_sm90(name):
    import importlib
    import inspect
    import os

    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if _interpreting():
        pytest.skip("kernels are built for the interpreter in this session; test_compile_outside_the_interpreter runs this")
    path, types, consts = KERNELS[name]
    mod_name, attr = path.split(".")
    fn = getattr(importlib.import_module(f"shapediff.geometry.triton.{mod_name}"), attr)
    params = list(inspect.signature(fn.fn).parameters)
    signature = dict(zip(params, types.split()))
    signature.update({k: "constexpr" for k in consts})
    compiled = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=consts),
                              target=GPUTarget("cuda", 90, 32), options={"enable_fp_fusion": False})
    assert compiled.asm["cubin"]


def _interpreting() -> bool:
    import os

    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@pytest.mark.slow
def test_compile_outside_the_interpreter():
    """Without CUDA, tests/conftest.py turns the interpreter on; compile in a process where it is off."""
    import os
    import subprocess
    import sys

    if not _interpreting():
        pytest.skip("this session compiles directly (test_kernel_compiles_for_sm90)")
    env = dict(os.environ, TRITON_INTERPRET="0")
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "slow", "-p", "no:cacheprovider", __file__,
                          "-k", "test_kernel_compiles_for_sm90"], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert f"{len(KERNELS)} passed" in res.stdout, res.stdout[-2000:]
