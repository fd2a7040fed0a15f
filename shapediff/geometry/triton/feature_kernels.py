"""Triton feature kernels with autograd: gathering (grouping), average voxelisation, trilinear devoxelisation.

Backward passes scatter with float32 atomics, so on a GPU their sums are exact up to the order of
additions (not bitwise reproducible); forward gathers are exact copies.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_OPTS = {"enable_fp_fusion": False}


@triton.jit
def _gather_kernel(src_ptr, idx_ptr, out_ptr, N, L, C, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr):
    """out[b, l, :] = src[b, idx[b, l], :] for (B, N, C) src, (B, L) idx."""
    b = tl.program_id(0).to(tl.int64)
    l_offs = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)
    lm = l_offs < L
    rows = tl.load(idx_ptr + b * L + l_offs, mask=lm, other=0)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        m = lm[:, None] & (c[None, :] < C)
        v = tl.load(src_ptr + (b * N + rows[:, None]) * C + c[None, :], mask=m, other=0.0)
        tl.store(out_ptr + (b * L + l_offs[:, None]) * C + c[None, :], v, mask=m)


@triton.jit
def _scatter_add_kernel(grad_ptr, idx_ptr, out_ptr, N, L, C, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr):
    """out[b, idx[b, l], :] += grad[b, l, :] (the gather's backward)."""
    b = tl.program_id(0).to(tl.int64)
    l_offs = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)
    lm = l_offs < L
    rows = tl.load(idx_ptr + b * L + l_offs, mask=lm, other=0)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        m = lm[:, None] & (c[None, :] < C)
        g = tl.load(grad_ptr + (b * L + l_offs[:, None]) * C + c[None, :], mask=m, other=0.0)
        tl.atomic_add(out_ptr + (b * N + rows[:, None]) * C + c[None, :], g, mask=m)


def _grid(b: int, length: int, c: int) -> tuple[tuple[int, int], dict]:
    block_l = 64
    return (b, triton.cdiv(max(length, 1), block_l)), {"BLOCK_L": block_l, "BLOCK_C": min(64, triton.next_power_of_2(c))}


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        b, n, c = features.shape
        flat = idx.reshape(b, -1).contiguous()
        out = features.new_empty(b, flat.shape[1], c)
        grid, blocks = _grid(b, flat.shape[1], c)
        _gather_kernel[grid](features.contiguous(), flat, out, n, flat.shape[1], c, **blocks, **_OPTS)
        ctx.save_for_backward(flat)
        ctx.n = n
        return out.reshape(*idx.shape, c)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (flat,) = ctx.saved_tensors
        b, length = flat.shape
        c = grad.shape[-1]
        out = grad.new_zeros(b, ctx.n, c)
        grid, blocks = _grid(b, length, c)
        _scatter_add_kernel[grid](grad.reshape(b, length, c).contiguous(), flat, out, ctx.n, length, c, **blocks, **_OPTS)
        return out, None


def gather_points(features: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(B, ..., C) = features (B, N, C)[b, idx (B, ...)]; differentiable with respect to ``features``."""
    return _Gather.apply(features, idx.long())


@triton.jit
def _voxel_sum_kernel(feat_ptr, vidx_ptr, sums_ptr, counts_ptr, C, N, R3, BLOCK_N: tl.constexpr,
                      BLOCK_C: tl.constexpr):
    """sums[b, c, v] += feat[b, c, n] and counts[b, v] += 1 for v = vidx[b, n]; feat (B, C, N)."""
    b = tl.program_id(0).to(tl.int64)
    n_offs = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    nm = n_offs < N
    v = tl.load(vidx_ptr + b * N + n_offs, mask=nm, other=0)
    tl.atomic_add(counts_ptr + b * R3 + v, tl.full([BLOCK_N], 1.0, tl.float32), mask=nm)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        m = (c[:, None] < C) & nm[None, :]
        f = tl.load(feat_ptr + (b * C + c[:, None]) * N + n_offs[None, :], mask=m, other=0.0)
        tl.atomic_add(sums_ptr + (b * C + c[:, None]) * R3 + v[None, :], f, mask=m)


@triton.jit
def _voxel_grad_kernel(grad_ptr, vidx_ptr, counts_ptr, out_ptr, C, N, R3, BLOCK_N: tl.constexpr,
                       BLOCK_C: tl.constexpr):
    """out[b, c, n] = grad[b, c, v] / counts[b, v] for v = vidx[b, n] (the average's backward)."""
    b = tl.program_id(0).to(tl.int64)
    n_offs = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    nm = n_offs < N
    v = tl.load(vidx_ptr + b * N + n_offs, mask=nm, other=0)
    cnt = tl.load(counts_ptr + b * R3 + v, mask=nm, other=1.0)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        m = (c[:, None] < C) & nm[None, :]
        g = tl.load(grad_ptr + (b * C + c[:, None]) * R3 + v[None, :], mask=m, other=0.0)
        tl.store(out_ptr + (b * C + c[:, None]) * N + n_offs[None, :], g / cnt[None, :], mask=m)


def _blocks(b: int, n: int, c: int) -> tuple[tuple[int, int], dict]:
    block_n = 64
    return (b, triton.cdiv(n, block_n)), {"BLOCK_N": block_n, "BLOCK_C": min(32, triton.next_power_of_2(c))}


class _AvgVoxelize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features: torch.Tensor, vidx: torch.Tensor, resolution: int) -> torch.Tensor:
        b, c, n = features.shape
        r3 = resolution**3
        sums = features.new_zeros(b, c, r3)
        counts = features.new_zeros(b, r3)
        grid, blocks = _blocks(b, n, c)
        _voxel_sum_kernel[grid](features.contiguous(), vidx, sums, counts, c, n, r3, **blocks, **_OPTS)
        counts = counts.clamp_min(1.0)
        ctx.save_for_backward(vidx, counts)
        ctx.shape = (b, c, n, r3)
        return (sums / counts[:, None]).reshape(b, c, resolution, resolution, resolution)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        vidx, counts = ctx.saved_tensors
        b, c, n, r3 = ctx.shape
        out = grad.new_empty(b, c, n)
        grid, blocks = _blocks(b, n, c)
        _voxel_grad_kernel[grid](grad.reshape(b, c, r3).contiguous(), vidx, counts, out, c, n, r3, **blocks, **_OPTS)
        return out, None, None


def avg_voxelize(features: torch.Tensor, voxel_index: torch.Tensor, resolution: int) -> torch.Tensor:
    """(B, C, R, R, R) mean of features (B, C, N) per flat voxel index (B, N) in [0, R^3)."""
    return _AvgVoxelize.apply(features, voxel_index.contiguous(), resolution)


@triton.jit
def _corners(coord_ptr, b, n_offs, nm, N, R):
    """Flat indices (x R^2 + y R + z) and weights of the 8 trilinear corners, in PVD's order 000..111."""
    p = coord_ptr + (b * N + n_offs) * 3
    x = tl.load(p, mask=nm, other=0.0)
    y = tl.load(p + 1, mask=nm, other=0.0)
    z = tl.load(p + 2, mask=nm, other=0.0)
    xl = tl.floor(x)
    yl = tl.floor(y)
    zl = tl.floor(z)
    fx = x - xl
    fy = y - yl
    fz = z - zl
    x0 = xl.to(tl.int32)
    y0 = yl.to(tl.int32)
    z0 = zl.to(tl.int32)
    x1 = tl.minimum(x0 + 1, R - 1)
    y1 = tl.minimum(y0 + 1, R - 1)
    z1 = tl.minimum(z0 + 1, R - 1)
    return x0, y0, z0, x1, y1, z1, fx, fy, fz


@triton.jit
def _devox_kernel(grid_ptr, coord_ptr, out_ptr, grad_ptr, C, N, R, BACKWARD: tl.constexpr, BLOCK_N: tl.constexpr,
                  BLOCK_C: tl.constexpr):
    """Forward: out[b, c, n] = sum_k w_k grid[b, c, v_k]. Backward: grid_grad[b, c, v_k] += w_k grad[b, c, n]."""
    b = tl.program_id(0).to(tl.int64)
    n_offs = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    nm = n_offs < N
    x0, y0, z0, x1, y1, z1, fx, fy, fz = _corners(coord_ptr, b, n_offs, nm, N, R)
    r3 = R * R * R
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        m = (c[:, None] < C) & nm[None, :]
        base = (b * C + c[:, None]) * r3
        if BACKWARD:
            g = tl.load(grad_ptr + (b * C + c[:, None]) * N + n_offs[None, :], mask=m, other=0.0)
        else:
            acc = tl.zeros([BLOCK_C, BLOCK_N], dtype=tl.float32)
        for k in tl.static_range(8):
            if (k >> 2) & 1:
                xi = x1
                wx = fx
            else:
                xi = x0
                wx = 1.0 - fx
            if (k >> 1) & 1:
                yi = y1
                wy = fy
            else:
                yi = y0
                wy = 1.0 - fy
            if k & 1:
                zi = z1
                wz = fz
            else:
                zi = z0
                wz = 1.0 - fz
            w = wx * wy * wz
            v = (xi * R + yi) * R + zi
            if BACKWARD:
                tl.atomic_add(out_ptr + base + v[None, :], g * w[None, :], mask=m)
            else:
                acc += tl.load(grid_ptr + base + v[None, :], mask=m, other=0.0) * w[None, :]
        if not BACKWARD:
            tl.store(out_ptr + (b * C + c[:, None]) * N + n_offs[None, :], acc, mask=m)


class _TrilinearDevoxelize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grid: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        b, c, r = grid.shape[:3]
        n = coords.shape[1]
        out = grid.new_empty(b, c, n)
        launch, blocks = _blocks(b, n, c)
        _devox_kernel[launch](grid.contiguous(), coords, out, out, c, n, r, BACKWARD=False, **blocks, **_OPTS)
        ctx.save_for_backward(coords)
        ctx.shape = tuple(grid.shape)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (coords,) = ctx.saved_tensors
        b, c, r = ctx.shape[:3]
        n = coords.shape[1]
        out = grad.new_zeros(ctx.shape)
        launch, blocks = _blocks(b, n, c)
        _devox_kernel[launch](out, coords, out, grad.contiguous(), c, n, r, BACKWARD=True, **blocks, **_OPTS)
        return out, None


def trilinear_devoxelize(grid: torch.Tensor, norm_coords: torch.Tensor) -> torch.Tensor:
    """(B, C, N) trilinear samples of grid (B, C, R, R, R) at (B, N, 3) grid coords in [0, R - 1]."""
    return _TrilinearDevoxelize.apply(grid, norm_coords.detach().contiguous())
