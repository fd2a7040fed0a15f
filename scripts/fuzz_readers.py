#!/usr/bin/env python
"""Bounded-time mutation fuzz of the file readers: geometry.load_points / load_mesh and
models.checkpoint.load_checkpoint.

Valid seed files (.ply binary points, .ply/.obj/.off meshes, .pcd binary_compressed, binary and ascii,
.xyz, .npy, .pt checkpoint) are mutated (truncation, byte flips, inserted / deleted / repeated
chunks, header numbers replaced) and fed to the readers in a persistent worker process. Outcomes:

- ``ok``: returned a sound result (finite float64 (N, 3) points / a Trimesh with faces / a dict);
- ``expected``: ValueError or FileNotFoundError naming the file;
- ``finding``: any other exception, an unsound return value, a message not naming the file, a
  worker crash, or a hang past ``--timeout`` seconds (the worker is then killed and restarted).

Usage: python scripts/fuzz_readers.py --seconds 60 [--seed 0] [--timeout 10] [--keep DIR]
Exit status 1 when there are findings, 2 for a bad argument (shapediff.cli). A pickle payload (would
create a marker file when run) is among the seeds; the run also fails if that marker ever appears.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import select
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from shapediff.cli import RUNTIME_FAILURE, run_main
from shapediff.preflight import check_writable_folder

READERS = {".ply": ("load_points", "load_mesh"), ".obj": ("load_points", "load_mesh"), ".off": ("load_points", "load_mesh"),
           ".pcd": ("load_points",), ".xyz": ("load_points",), ".npy": ("load_points",), ".pt": ("load_checkpoint",)}


class _Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def make_seeds(folder: Path, marker: Path) -> list[Path]:
    """Write valid seed files (and one pickle payload) into ``folder``."""
    import numpy as np
    import torch
    import trimesh

    from shapediff.geometry import save_mesh, save_points
    from shapediff.models import PointCloudDiffusion

    rng = np.random.default_rng(0)
    pts = rng.random((40, 3))
    for suffix in (".ply", ".pcd", ".xyz", ".npy"):
        save_points(folder / f"points{suffix}", pts)
    (folder / "ascii.pcd").write_text(
        "# .PCD v0.7\nVERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 4\nHEIGHT 1\n"
        "VIEWPOINT 0 0 0 1 0 0 0\nPOINTS 4\nDATA ascii\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n"
    )
    (folder / "binary.pcd").write_bytes(
        b"VERSION 0.7\nFIELDS x y z rgb\nSIZE 4 4 4 4\nTYPE F F F U\nCOUNT 1 1 1 1\nWIDTH 8\nHEIGHT 1\n"
        b"VIEWPOINT 0 0 0 1 0 0 0\nPOINTS 8\nDATA binary\n" + np.c_[pts[:8].astype(np.float32), np.zeros((8, 1), np.float32)].tobytes()
    )
    box = trimesh.creation.box()
    for suffix in (".obj", ".off"):
        save_mesh(folder / f"mesh{suffix}", box)
    save_mesh(folder / "mesh.ply", box)
    (folder / "ascii_mesh.ply").write_bytes(box.export(file_type="ply", encoding="ascii"))
    model = PointCloudDiffusion(
        denoiser={"_target_": "shapediff.denoisers.PointNetDenoiser", "width": 8, "depth": 1},
        diffusion={"_target_": "shapediff.diffusion.GaussianDiffusion", "num_timesteps": 10},
        num_points=16,
    )
    model.save(folder / "model.pt")
    torch.save({"format": "shapediff", "format_version": 1, "x": _Evil(str(marker))}, folder / "evil.pt")
    return sorted(p for p in folder.iterdir() if p.suffix in READERS)


def mutate(data: bytes, rnd: random.Random) -> tuple[bytes, str]:
    """One to three random mutations of ``data``; returns the bytes and a short description."""
    ops = []
    for _ in range(rnd.randint(1, 3)):
        op = rnd.choice(["truncate", "flip", "insert", "delete", "repeat", "number", "number"])
        n = len(data)
        if op == "truncate" and n:
            cut = rnd.randrange(n)
            data, desc = data[:cut], f"truncate@{cut}"
        elif op == "flip" and n:
            b = bytearray(data)
            at = [rnd.randrange(n) for _ in range(rnd.randint(1, 8))]
            for i in at:
                b[i] ^= 1 << rnd.randrange(8)
            data, desc = bytes(b), f"flip@{at}"
        elif op == "insert":
            at = rnd.randrange(n + 1)
            junk = rnd.choice([os.urandom(rnd.randint(1, 64)), b"\n", b" nan", b" inf", b"-1", b"\x00" * 16, b"end_header\n"])
            data, desc = data[:at] + junk + data[at:], f"insert@{at}:{junk[:8]!r}"
        elif op == "delete" and n:
            at, ln = rnd.randrange(n), rnd.randint(1, 64)
            data, desc = data[:at] + data[at + ln :], f"delete@{at}+{ln}"
        elif op == "repeat" and n:
            at, ln = rnd.randrange(n), rnd.randint(1, 64)
            data, desc = data[:at] + data[at : at + ln] * rnd.randint(2, 5) + data[at:], f"repeat@{at}+{ln}"
        else:  # replace an ASCII number (header counts, sizes, coordinates)
            nums = list(re.finditer(rb"-?\d+", data[:4096]))
            if not nums:
                continue
            m = rnd.choice(nums)
            new = str(rnd.choice([0, -1, 1, 2, 3, 7, 255, 65536, 2**31 - 1, 2**31, 2**63, 10**12])).encode()
            data, desc = data[: m.start()] + new + data[m.end() :], f"number@{m.start()}:{m.group()[:12]!r}->{new!r}"
        ops.append(desc)
    return data, ";".join(ops) or "none"


WORKER = r"""
import json, os, sys, traceback, resource, warnings, logging
proto = os.fdopen(os.dup(1), "w", buffering=1)  # protocol channel; native libraries' stdout goes to /dev/null
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
warnings.filterwarnings("ignore"); logging.disable(logging.CRITICAL)
lim = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
import numpy as np, trimesh
from shapediff.geometry import load_points, load_mesh
from shapediff.models.checkpoint import load_checkpoint
print(json.dumps({"ready": True}), file=proto, flush=True)
for line in sys.stdin:
    job = json.loads(line)
    path = job["path"]
    try:
        if job["reader"] == "load_points":
            r = load_points(path)
            sound = isinstance(r, np.ndarray) and r.dtype == np.float64 and r.ndim == 2 and r.shape[1] == 3 and len(r) > 0 and bool(np.isfinite(r).all())
        elif job["reader"] == "load_mesh":
            r = load_mesh(path)
            sound = isinstance(r, trimesh.Trimesh) and len(r.faces) > 0
        else:
            r = load_checkpoint(path)
            sound = isinstance(r, dict)
        out = {"outcome": "ok" if sound else "finding", "kind": "ok" if sound else "unsound result " + type(r).__name__,
               "msg": "" if sound else repr(getattr(r, "shape", None)) + " " + repr(getattr(r, "dtype", None)) + " " + np.array2string(np.asarray(getattr(r, "vertices", r))[:3]) if isinstance(r, np.ndarray) else ""}
    except (ValueError, FileNotFoundError) as e:
        named = path in str(e)
        out = {"outcome": "expected" if named else "finding", "kind": type(e).__name__ if named else "message does not name the file", "msg": str(e)[:300]}
    except BaseException as e:
        out = {"outcome": "finding", "kind": type(e).__name__, "msg": (str(e)[:300] + " | " + traceback.format_exc().splitlines()[-3].strip())}
    print(json.dumps(out), file=proto, flush=True)
"""


class Worker:
    """A persistent reader process; restarted after a crash or a timeout."""

    def __init__(self, mem_bytes: int):
        self.mem = mem_bytes
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, str(self.mem)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self._read(120)

    def _read(self, timeout: float) -> dict | None:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        if not line:
            return {"outcome": "finding", "kind": f"worker crashed (exit {self.proc.wait()})"}
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            return {"outcome": "finding", "kind": "worker protocol garbled", "msg": line[:200]}

    def run(self, reader: str, path: Path, timeout: float) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        self.proc.stdin.write(json.dumps({"reader": reader, "path": str(path)}) + "\n")
        self.proc.stdin.flush()
        out = self._read(timeout)
        if out is None:
            self.stop()
            return {"outcome": "finding", "kind": f"hang (> {timeout:g} s)"}
        if out.get("kind", "").startswith("worker crashed"):
            self.proc = None
        return out

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def fuzz(seconds: float, seed: int = 0, timeout: float = 10.0, keep: Path | None = None,
         mem_gb: float = 4.0, verbose: bool = True) -> dict:
    """Run the fuzz for ``seconds``; returns counts and the list of findings."""
    rnd = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="shapediff-fuzz-"))
    marker = work / "PAYLOAD_RAN"
    (work / "seeds").mkdir()
    seeds = make_seeds(work / "seeds", marker)
    worker = Worker(int(mem_gb * 2**30))
    worker.start()
    counts: Counter = Counter()
    per_reader: Counter = Counter()
    per_suffix: Counter = Counter()
    findings: list[dict] = []
    t0 = time.monotonic()
    i = 0
    try:
        while time.monotonic() - t0 < seconds:
            src = rnd.choice(seeds)
            data, desc = mutate(src.read_bytes(), rnd) if i % 20 else (src.read_bytes(), "unmutated")
            path = work / f"case{i % 8}{src.suffix}"
            path.write_bytes(data)
            for reader in READERS[src.suffix]:
                res = worker.run(reader, path, timeout)
                counts[res["outcome"]] += 1
                per_reader[f"{reader}:{res['outcome']}"] += 1
                per_suffix[f"{src.suffix}:{res['outcome']}"] += 1
                if res["outcome"] == "finding":
                    rec = {"reader": reader, "seed_file": src.name, "mutation": desc, **res}
                    if keep is not None:
                        keep.mkdir(parents=True, exist_ok=True)
                        saved = keep / f"finding{len(findings)}{src.suffix}"
                        saved.write_bytes(data)
                        rec["saved"] = str(saved)
                    findings.append(rec)
                    if verbose:
                        print("FINDING", json.dumps(rec), flush=True)
            i += 1
    finally:
        worker.stop()
    if marker.exists():
        findings.append({"kind": "pickle payload executed", "marker": str(marker)})
    return {"seconds": round(time.monotonic() - t0, 1), "files": i, "reads": sum(counts.values()),
            "outcomes": dict(counts), "per_reader": dict(sorted(per_reader.items())),
            "per_suffix": dict(sorted(per_suffix.items())), "findings": findings}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="time budget (default 60)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=10.0, help="per-input limit; past it counts as a hang")
    parser.add_argument("--mem-gb", type=float, default=4.0, help="address-space limit of the reader process")
    parser.add_argument("--keep", type=Path, default=None, help="folder to save inputs that gave findings")
    args = parser.parse_args(argv)
    for flag in ("seconds", "timeout", "mem_gb"):
        if not getattr(args, flag) > 0:  # also refuses nan
            raise ValueError(f"--{flag.replace('_', '-')}: expected a positive number, got {getattr(args, flag)}")
    if args.keep is not None:
        check_writable_folder(args.keep, "--keep")
    result = fuzz(args.seconds, args.seed, args.timeout, args.keep, args.mem_gb)
    summary = {k: v for k, v in result.items() if k != "findings"}
    summary["findings"] = len(result["findings"])
    print(json.dumps(summary, indent=1))
    return RUNTIME_FAILURE if result["findings"] else 0


if __name__ == "__main__":
    sys.exit(run_main(main))
