"""Fixtures that write data in exactly the real layouts into temporary folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh

CHAIR, AIRPLANE = "03001627", "02691156"


def pc15k_cloud(seed: int) -> np.ndarray:
    """(15000, 3) float32 whose column 0 encodes the row (row / 15000), so tests can tell which
    part of the file a point came from; the other columns are random."""
    rng = np.random.default_rng(seed)
    cloud = rng.normal(size=(15000, 3)).astype(np.float32) * [1.0, 0.5, 0.25] + [0.0, 0.3, -0.2]
    cloud[:, 0] = np.arange(15000) / 15000.0
    return cloud.astype(np.float32)


@pytest.fixture
def pc15k_root(tmp_path) -> Path:
    """``ShapeNetCore.v2.PC15k/<synset>/<split>/<model>.npy``: chair 5/2/2 shapes, airplane 3/1/1."""
    root = tmp_path / "ShapeNetCore.v2.PC15k"
    seed = 0
    for synset, counts in ((CHAIR, (5, 2, 2)), (AIRPLANE, (3, 1, 1))):
        for split, count in zip(("train", "val", "test"), counts):
            (root / synset / split).mkdir(parents=True)
            for k in range(count):
                seed += 1
                np.save(root / synset / split / f"{synset[-3:]}model{k:02d}.npy", pc15k_cloud(seed))
    return root


OBJ_TWO_PARTS = """# a ShapeNetCore.v2-style model_normalized.obj: two material groups, .mtl absent
mtllib model_normalized.mtl
o part_a
v -0.5 -0.5 -0.5
v 0.5 -0.5 -0.5
v 0.5 0.5 -0.5
v -0.5 0.5 -0.5
v -0.5 -0.5 0.5
v 0.5 -0.5 0.5
v 0.5 0.5 0.5
v -0.5 0.5 0.5
usemtl material_0
f 1 3 2
f 1 4 3
f 5 6 7
f 5 7 8
f 1 2 6
f 1 6 5
f 4 8 7
f 4 7 3
o part_b
v -0.5 -0.5 -0.5
v -0.5 0.5 -0.5
v -0.5 0.5 0.5
v -0.5 -0.5 0.5
usemtl material_1
f 9 11 10
f 9 12 11
"""


def write_shapenet_v2(root: Path, models: dict[str, dict[str, str | trimesh.Trimesh]]) -> Path:
    """``root/<synset>/<model>/models/model_normalized.obj`` from OBJ text or meshes."""
    for synset, entries in models.items():
        for model_id, content in entries.items():
            folder = root / synset / model_id / "models"
            folder.mkdir(parents=True)
            text = content if isinstance(content, str) else content.export(file_type="obj")
            (folder / "model_normalized.obj").write_text(text)
    return root


@pytest.fixture
def shapenet_v2_root(tmp_path) -> Path:
    """Two chairs (a two-part scene without its .mtl; a box), two airplanes, and one broken file."""
    box = trimesh.creation.box(extents=(0.4, 0.8, 0.2))
    return write_shapenet_v2(tmp_path / "ShapeNetCore.v2", {
        CHAIR: {"c0a1": OBJ_TWO_PARTS, "c0b2": box, "c0broken": "v 0 0 0\nv 1 0 0\nf 1 2 7\nthis is not obj\n"},
        AIRPLANE: {"a1": trimesh.creation.icosphere(subdivisions=2, radius=0.4),
                   "a2": trimesh.creation.cylinder(radius=0.1, height=0.9)},
    })
