"""Triton selection kernels: farthest point sampling, ball query, three-NN and kNN (incl. Chamfer's NN).

Each wrapper takes the same contiguous float32 tensors as the PyTorch op it replaces and returns
long indices equal to that op's (see ``shapediff.geometry.triton`` for the exactness rules).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_OPTS = {"enable_fp_fusion": False}  # no FMA: distances round exactly as dx*dx + dy*dy + dz*dz in PyTorch
_ONE_CHUNK_FPS = 4096  # FPS keeps the cloud in registers up to this many points
_BIG: tl.constexpr = tl.constexpr(2**30)  # "no index" key; a constexpr so kernels may read it


@triton.jit
def _sq_dist(x, y, z, px, py, pz):
    dx = x - px
    dy = y - py
    dz = z - pz
    return dx * dx + dy * dy + dz * dz


@triton.jit
def _fps_kernel(pts_ptr, first_ptr, dist_ptr, out_ptr, N, S, TIE_MOD: tl.constexpr, ONE_CHUNK: tl.constexpr,
                BLOCK: tl.constexpr):
    """One program per cloud, all S steps. Ties: lowest key, key = k or (k mod TIE_MOD) * N + k."""
    b = tl.program_id(0).to(tl.int64)
    pts = pts_ptr + b * N * 3
    dist = dist_ptr + b * N
    out = out_ptr + b * S
    last = tl.load(first_ptr + b)
    tl.store(out, last)
    offs = tl.arange(0, BLOCK)
    if ONE_CHUNK:
        m = offs < N
        x = tl.load(pts + offs * 3, mask=m, other=0.0)
        y = tl.load(pts + offs * 3 + 1, mask=m, other=0.0)
        z = tl.load(pts + offs * 3 + 2, mask=m, other=0.0)
        if TIE_MOD > 0:
            key = (offs % TIE_MOD) * N + offs
        else:
            key = offs
        md = tl.where(m, float("inf"), -1.0)
        for s in range(1, S):
            lx = tl.load(pts + last * 3)
            ly = tl.load(pts + last * 3 + 1)
            lz = tl.load(pts + last * 3 + 2)
            md = tl.where(m, tl.minimum(md, _sq_dist(x, y, z, lx, ly, lz)), -1.0)
            best = tl.max(md, axis=0)
            k = tl.min(tl.where(md == best, key, _BIG), axis=0)
            if TIE_MOD > 0:
                k = k % N
            last = k.to(tl.int64)
            tl.store(out + s, last)
    else:
        for start in range(0, N, BLOCK):
            o = start + offs
            tl.store(dist + o, tl.full([BLOCK], float("inf"), tl.float32), mask=o < N)
        for s in range(1, S):
            lx = tl.load(pts + last * 3)
            ly = tl.load(pts + last * 3 + 1)
            lz = tl.load(pts + last * 3 + 2)
            best_v = tl.full([], -2.0, tl.float32)
            best_k = tl.full([], _BIG, tl.int32)
            for start in range(0, N, BLOCK):
                o = start + offs
                m = o < N
                x = tl.load(pts + o * 3, mask=m, other=0.0)
                y = tl.load(pts + o * 3 + 1, mask=m, other=0.0)
                z = tl.load(pts + o * 3 + 2, mask=m, other=0.0)
                old = tl.load(dist + o, mask=m, other=-1.0)
                md = tl.where(m, tl.minimum(old, _sq_dist(x, y, z, lx, ly, lz)), -1.0)
                tl.store(dist + o, md, mask=m)
                if TIE_MOD > 0:
                    key = (o % TIE_MOD) * N + o
                else:
                    key = o
                v = tl.max(md, axis=0)
                k = tl.min(tl.where(md == v, key, _BIG), axis=0)
                better = (v > best_v) | ((v == best_v) & (k < best_k))
                best_v = tl.where(better, v, best_v)
                best_k = tl.where(better, k, best_k)
            if TIE_MOD > 0:
                best_k = best_k % N
            last = best_k.to(tl.int64)
            tl.store(out + s, last)


def farthest_point_sample(points: torch.Tensor, first: torch.Tensor, num_samples: int, tie_mod: int = 0) -> torch.Tensor:
    """FPS indices (B, S) of (B, N, 3) float32 ``points`` from start indices ``first`` (B,).

    ``tie_mod`` 0: ties to the lowest index; 512: PVD's rule (lowest ``k mod 512``, then lowest k).
    """
    b, n, _ = points.shape
    pts = points.detach().contiguous()
    out = torch.empty(b, num_samples, dtype=torch.long, device=pts.device)
    one = n <= _ONE_CHUNK_FPS
    block = triton.next_power_of_2(n) if one else 1024
    dist = pts.new_empty(1 if one else b * n)
    _fps_kernel[(b,)](pts, first.to(torch.long).contiguous(), dist, out, n, num_samples, TIE_MOD=tie_mod,
                      ONE_CHUNK=one, BLOCK=block, num_warps=8 if block >= 2048 else 4, **_OPTS)
    return out


@triton.jit
def _ball_query_kernel(pts_ptr, ctr_ptr, out_ptr, N, S, K, r2, BLOCK_S: tl.constexpr, BLOCK_N: tl.constexpr,
                       BLOCK_K: tl.constexpr):
    """First K points (index order) with d^2 < r2 per centre; short rows repeat the first; empty -> 0."""
    b = tl.program_id(0).to(tl.int64)
    s_offs = tl.program_id(1) * BLOCK_S + tl.arange(0, BLOCK_S)
    sm = s_offs < S
    ctr = ctr_ptr + (b * S + s_offs) * 3
    cx = tl.load(ctr, mask=sm, other=0.0)
    cy = tl.load(ctr + 1, mask=sm, other=0.0)
    cz = tl.load(ctr + 2, mask=sm, other=0.0)
    rows = out_ptr + (b * S + s_offs[:, None]) * K
    cnt = tl.zeros([BLOCK_S], dtype=tl.int32)
    first = tl.zeros([BLOCK_S], dtype=tl.int32)
    for start in range(0, N, BLOCK_N):
        n_offs = start + tl.arange(0, BLOCK_N)
        nm = n_offs < N
        p = pts_ptr + (b * N + n_offs) * 3
        px = tl.load(p, mask=nm, other=0.0)
        py = tl.load(p + 1, mask=nm, other=0.0)
        pz = tl.load(p + 2, mask=nm, other=0.0)
        d = _sq_dist(cx[:, None], cy[:, None], cz[:, None], px[None, :], py[None, :], pz[None, :])
        inside = (d < r2) & nm[None, :] & sm[:, None]
        rank = tl.cumsum(inside.to(tl.int32), axis=1)
        pos = cnt[:, None] + rank - 1
        tl.store(rows + pos, (n_offs[None, :] + 0 * pos).to(tl.int64), mask=inside & (pos < K))
        chunk_first = tl.min(tl.where(inside, n_offs[None, :], N), axis=1)
        first = tl.where((cnt == 0) & (chunk_first < N), chunk_first, first)
        cnt += tl.sum(inside.to(tl.int32), axis=1)
    k_offs = tl.arange(0, BLOCK_K)
    fill = (k_offs[None, :] >= cnt[:, None]) & (k_offs[None, :] < K) & sm[:, None]
    tl.store(rows + k_offs[None, :], (first[:, None] + 0 * k_offs[None, :]).to(tl.int64), mask=fill)


def ball_query(points: torch.Tensor, centers: torch.Tensor, r2: float, k: int) -> torch.Tensor:
    """(B, S, K) ball-query indices; ``r2`` the squared radius, exactly representable in float32."""
    b, n, _ = points.shape
    s = centers.shape[1]
    out = torch.empty(b, s, k, dtype=torch.long, device=points.device)
    block_s, block_n = 16, 128
    grid = (b, triton.cdiv(s, block_s))
    _ball_query_kernel[grid](points.detach().contiguous(), centers.detach().contiguous(), out, n, s, k, r2,
                             BLOCK_S=block_s, BLOCK_N=block_n, BLOCK_K=triton.next_power_of_2(k), **_OPTS)
    return out


@triton.jit
def _three_nn_kernel(x_ptr, y_ptr, out_ptr, N, M, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr):
    """Three nearest y of each x ordered by (d^2, index); missing slots (M < 3) hold index 0."""
    b = tl.program_id(0).to(tl.int64)
    n_offs = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    nm = n_offs < N
    q = x_ptr + (b * N + n_offs) * 3
    qx = tl.load(q, mask=nm, other=0.0)
    qy = tl.load(q + 1, mask=nm, other=0.0)
    qz = tl.load(q + 2, mask=nm, other=0.0)
    inf = float("inf")
    d0 = tl.full([BLOCK_N], inf, tl.float32)
    d1 = tl.full([BLOCK_N], inf, tl.float32)
    d2 = tl.full([BLOCK_N], inf, tl.float32)
    i0 = tl.zeros([BLOCK_N], dtype=tl.int32)
    i1 = tl.zeros([BLOCK_N], dtype=tl.int32)
    i2 = tl.zeros([BLOCK_N], dtype=tl.int32)
    for start in range(0, M, BLOCK_M):
        m_offs = start + tl.arange(0, BLOCK_M)
        mm = m_offs < M
        p = y_ptr + (b * M + m_offs) * 3
        px = tl.load(p, mask=mm, other=0.0)
        py = tl.load(p + 1, mask=mm, other=0.0)
        pz = tl.load(p + 2, mask=mm, other=0.0)
        d = _sq_dist(qx[:, None], qy[:, None], qz[:, None], px[None, :], py[None, :], pz[None, :])
        d = tl.where(mm[None, :], d, inf)
        for _ in tl.static_range(3):  # the chunk's 3 best in (d, index) order, inserted with strict <
            c = tl.min(d, axis=1)
            ci = tl.min(tl.where(d == c[:, None], m_offs[None, :], _BIG), axis=1)
            d = tl.where(m_offs[None, :] == ci[:, None], inf, d)
            lt0 = c < d0
            lt1 = c < d1
            lt2 = c < d2
            d2 = tl.where(lt1, d1, tl.where(lt2, c, d2))
            i2 = tl.where(lt1, i1, tl.where(lt2, ci, i2))
            d1 = tl.where(lt0, d0, tl.where(lt1, c, d1))
            i1 = tl.where(lt0, i0, tl.where(lt1, ci, i1))
            d0 = tl.where(lt0, c, d0)
            i0 = tl.where(lt0, ci, i0)
    o = out_ptr + (b * N + n_offs) * 3
    tl.store(o, i0.to(tl.int64), mask=nm)
    tl.store(o + 1, i1.to(tl.int64), mask=nm)
    tl.store(o + 2, i2.to(tl.int64), mask=nm)


def three_nn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, N, 3) indices of the three nearest ``y`` (B, M, 3) of each ``x`` (B, N, 3), by (d^2, index)."""
    b, n, _ = x.shape
    m = y.shape[1]
    out = torch.empty(b, n, 3, dtype=torch.long, device=x.device)
    block_n = 64
    _three_nn_kernel[(b, triton.cdiv(n, block_n))](x.detach().contiguous(), y.detach().contiguous(), out, n, m,
                                                   BLOCK_N=block_n, BLOCK_M=64, **_OPTS)
    return out


@triton.jit
def _knn_kernel(x_ptr, y_ptr, len_ptr, out_ptr, N, M, K, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr):
    """K passes; pass j finds the smallest (d^2, index) above pass j-1's. Only the first len[b] y count."""
    b = tl.program_id(0).to(tl.int64)
    n_offs = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    nm = n_offs < N
    q = x_ptr + (b * N + n_offs) * 3
    qx = tl.load(q, mask=nm, other=0.0)
    qy = tl.load(q + 1, mask=nm, other=0.0)
    qz = tl.load(q + 2, mask=nm, other=0.0)
    m_valid = tl.load(len_ptr + b)
    inf = float("inf")
    prev_d = tl.full([BLOCK_N], -inf, tl.float32)
    prev_i = tl.full([BLOCK_N], -1, tl.int32)
    for j in range(0, K):
        best_d = tl.full([BLOCK_N], inf, tl.float32)
        best_i = tl.full([BLOCK_N], _BIG, tl.int32)
        for start in range(0, M, BLOCK_M):
            m_offs = start + tl.arange(0, BLOCK_M)
            mm = m_offs < m_valid
            p = y_ptr + (b * M + m_offs) * 3
            px = tl.load(p, mask=mm, other=0.0)
            py = tl.load(p + 1, mask=mm, other=0.0)
            pz = tl.load(p + 2, mask=mm, other=0.0)
            d = _sq_dist(qx[:, None], qy[:, None], qz[:, None], px[None, :], py[None, :], pz[None, :])
            after = (d > prev_d[:, None]) | ((d == prev_d[:, None]) & (m_offs[None, :] > prev_i[:, None]))
            d = tl.where(mm[None, :] & after, d, inf)
            c = tl.min(d, axis=1)
            ci = tl.min(tl.where((d == c[:, None]) & mm[None, :] & after, m_offs[None, :], _BIG), axis=1)
            better = (c < best_d) | ((c == best_d) & (ci < best_i))
            best_d = tl.where(better, c, best_d)
            best_i = tl.where(better, ci, best_i)
        tl.store(out_ptr + (b * N + n_offs) * K + j, best_i.to(tl.int64), mask=nm)
        prev_d = best_d
        prev_i = best_i


def knn_idx(x: torch.Tensor, y: torch.Tensor, k: int, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """(B, N, K) indices of the K nearest ``y`` (B, M, 3) of each ``x`` (B, N, 3), by (d^2, index).

    No (N, M) matrix is formed: each program streams ``y`` in chunks (K = 1 is Chamfer's fused
    nearest-neighbour reduction). ``lengths`` (B,) valid leading points of each ``y`` cloud.
    """
    b, n, _ = x.shape
    m = y.shape[1]
    if lengths is None:
        lengths = torch.full((b,), m, dtype=torch.int32, device=x.device)
    out = torch.empty(b, n, k, dtype=torch.long, device=x.device)
    block_n = 64
    _knn_kernel[(b, triton.cdiv(n, block_n))](x.detach().contiguous(), y.detach().contiguous(),
                                              lengths.to(torch.int32).contiguous(), out, n, m, k,
                                              BLOCK_N=block_n, BLOCK_M=128, **_OPTS)
    return out
