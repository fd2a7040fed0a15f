"""The checked PCD reader (shapediff.geometry.pcd): malformed headers and data sections raise a
ValueError naming the file and the header field; valid files read exactly as Open3D reads them."""

from __future__ import annotations

import struct
import subprocess
import sys

import numpy as np
import pytest

from shapediff.geometry import load_points
from shapediff.geometry.pcd import parse_pcd_header
from tests._open3d import open3d_or_skip

HEADER = {
    "VERSION": "0.7", "FIELDS": "x y z", "SIZE": "4 4 4", "TYPE": "F F F", "COUNT": "1 1 1", "WIDTH": "2",
    "HEIGHT": "1", "VIEWPOINT": "0 0 0 1 0 0 0", "POINTS": "2", "DATA": "ascii",
}
ROWS = b"0 0 0\n1 2 3\n"


def pcd_bytes(body: bytes = ROWS, **changes: str | None) -> bytes:
    """A valid 2-point ascii PCD, with header entries replaced (None drops the line)."""
    header = {**HEADER, **changes}
    lines = "".join(f"{k} {v}\n" for k, v in header.items() if v is not None)
    return b"# .PCD v0.7 - Point Cloud Data file format\n" + lines.encode() + body


def _compressed(points: int, step: int, packed: int, unpacked: int, payload: bytes = b"") -> bytes:
    return pcd_bytes(struct.pack("<II", packed, unpacked) + payload, DATA="binary_compressed",
                     WIDTH=str(points), POINTS=str(points))


MALFORMED = {
    # name: (file bytes, header field named in the error, a detail of the error)
    "count_int_max": (pcd_bytes(COUNT="2147483647 1 1"), "COUNT", "expected 1 for field 'x'"),
    "count_minus_one": (pcd_bytes(COUNT="-1 1 1"), "COUNT", "non-negative integers"),
    "count_extra_field_huge": (pcd_bytes(FIELDS="x y z w", SIZE="4 4 4 4", TYPE="F F F F", COUNT="1 1 1 65536"),
                               "COUNT", "1..4096 for field 'w'"),
    "points_float": (pcd_bytes(POINTS="1e12"), "POINTS", "one non-negative integer"),
    "points_1e12": (pcd_bytes(WIDTH="1000000000000", POINTS="1000000000000"), "POINTS", "at most 2 points in 12 bytes"),
    "points_not_width_height": (pcd_bytes(POINTS="3"), "POINTS", "WIDTH * HEIGHT = 2 * 1 = 2"),
    "width_negative": (pcd_bytes(WIDTH="-1"), "WIDTH", "non-negative integer"),
    "size_3": (pcd_bytes(SIZE="3 4 4"), "SIZE", "one of (4, 8) bytes for field 'x'"),
    "size_minus_one": (pcd_bytes(SIZE="-1 4 4"), "SIZE", "non-negative integers"),
    "size_too_few": (pcd_bytes(SIZE="4 4"), "SIZE", "3 values (one per FIELDS entry)"),
    "type_unknown": (pcd_bytes(TYPE="X F F"), "TYPE", "I, U or F"),
    "no_xyz": (pcd_bytes(FIELDS="a b c"), "FIELDS", "including x, y and z"),
    "duplicate_field": (pcd_bytes(FIELDS="x x z"), "FIELDS", "distinct names"),
    "field_xy_not_x": (pcd_bytes(FIELDS="xy y z"), "FIELDS", "including x, y and z"),
    "viewpoint_short": (pcd_bytes(VIEWPOINT="0 0 0"), "VIEWPOINT", "7 finite numbers"),
    "viewpoint_nan": (pcd_bytes(VIEWPOINT="0 0 0 nan 0 0 0"), "VIEWPOINT", "7 finite numbers"),
    "data_unknown": (pcd_bytes(DATA="zip"), "DATA", "ascii or binary or binary_compressed"),
    "no_data_line": (pcd_bytes(b"", DATA=None), "DATA", "header line ending in a newline"),
    "no_size_line": (pcd_bytes(SIZE=None), "SIZE", "the line to be present"),
    "unknown_key": (b"FOO 1\n" + pcd_bytes(), "line", "or a '#' comment"),
    "binary_junk_header": (b"\xff\xfe\x00garbage\n" + pcd_bytes(), "line", "ASCII text"),
    "ascii_missing_row": (pcd_bytes(b"0 0 0\n"), "POINTS", "at most 1 points"),
    "ascii_extra_row": (pcd_bytes(ROWS + b"4 5 6\n"), "DATA", "got '3 rows, 9 values'"),
    "ascii_short_row": (pcd_bytes(b"0 0 0\n1 2\n3\n"), "DATA", "2 rows of 3 values"),
    "ascii_word": (pcd_bytes(b"0 0 0\n1 2 abc\n"), "DATA", "abc"),
    "binary_truncated": (pcd_bytes(struct.pack("<3f", 1, 2, 3), DATA="binary"), "POINTS",
                         "at most 1 points of 12 bytes"),
    "compressed_no_sizes": (pcd_bytes(b"\x01\x02", DATA="binary_compressed"), "DATA", "8 bytes of sizes"),
    "compressed_packed_too_big": (_compressed(2, 12, 10**6, 24), "DATA", "compressed size of at most"),
    "compressed_unpacked_mismatch": (_compressed(2, 12, 0, 2**32 - 1), "DATA", "POINTS * 12 = 24 bytes"),
    "compressed_ratio_impossible": (_compressed(10**8, 12, 4, 12 * 10**8, b"\x00" * 4), "DATA", "at most 88 x the compressed"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_pcd_names_file_and_field(tmp_path, name):
    data, field, detail = MALFORMED[name]
    path = tmp_path / f"{name}.pcd"
    path.write_bytes(data)
    with pytest.raises(ValueError) as err:
        load_points(path)
    msg = str(err.value)
    assert str(path) in msg and f"PCD header {field}:" in msg and detail in msg, msg


def test_known_crashers_do_not_crash_the_process(tmp_path):
    """The headers that segfaulted Open3D (COUNT 2^31-1 / -1, POINTS 1e12, SIZE -1 / 65536), as ascii
    and as binary_compressed files, read in a child process: each must end in a ValueError naming it."""
    files = []
    for i, change in enumerate([{"COUNT": "2147483647 1 1"}, {"COUNT": "-1 1 1"}, {"POINTS": "1e12"},
                                {"SIZE": "-1 4 4"}, {"SIZE": "65536 4 4"}]):
        for kind in ("ascii", "binary_compressed"):
            body = ROWS if kind == "ascii" else struct.pack("<II", 24, 24) + bytes(24)
            files.append(tmp_path / f"crash{i}_{kind}.pcd")
            files[-1].write_bytes(pcd_bytes(body, DATA=kind, **change))
    code = (
        "import sys\nfrom shapediff.geometry import load_points\nfor f in sys.argv[1:]:\n"
        "    try:\n        load_points(f)\n    except ValueError as e:\n"
        "        assert f in str(e) and 'PCD header' in str(e), str(e)\n        continue\n"
        "    sys.exit('no error for ' + f)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, *map(str, files)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])


@pytest.mark.parametrize("ascii_, compressed", [(True, False), (False, False), (False, True)],
                         ids=["ascii", "binary", "binary_compressed"])
def test_open3d_written_files_read_exactly(tmp_path, ascii_, compressed):
    o3d = open3d_or_skip()
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(64, 3)) * 1e3
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    cloud.colors = o3d.utility.Vector3dVector(rng.random((64, 3)))  # an extra U field after x y z
    cloud.normals = o3d.utility.Vector3dVector(rng.random((64, 3)))
    path = tmp_path / "c.pcd"
    assert o3d.io.write_point_cloud(str(path), cloud, write_ascii=ascii_, compressed=compressed)
    expected = np.asarray(o3d.io.read_point_cloud(str(path)).points, dtype=np.float64)  # load_points keeps what the file holds
    np.testing.assert_array_equal(load_points(path), expected)
    np.testing.assert_allclose(load_points(path), pts, rtol=1e-6)


def test_binary_fields_in_any_order_and_padding(tmp_path):
    """x y z need not come first: a record of (rgb U4, _ padding 4 bytes, z F8, xy F4 x 2 (an array field
    whose name merely contains x), x F4, y F4)."""
    rec = np.dtype([("rgb", "<u4"), ("pad", "V4"), ("z", "<f8"), ("xy", "<f4", (2,)), ("x", "<f4"), ("y", "<f4")])
    data = np.zeros(3, dtype=rec)
    data["x"], data["y"], data["z"], data["xy"] = [1, 2, 3], [4, 5, 6], [7, 8, 9], 99
    path = tmp_path / "order.pcd"
    path.write_bytes(pcd_bytes(data.tobytes(), FIELDS="rgb _ z xy x y", SIZE="4 4 8 4 4 4", TYPE="U U F F F F",
                               COUNT="1 1 1 2 1 1", WIDTH="3", POINTS="3", DATA="binary"))
    np.testing.assert_array_equal(load_points(path), [[1, 4, 7], [2, 5, 8], [3, 6, 9]])


def test_organised_cloud_height_and_optional_lines(tmp_path):
    """HEIGHT > 1 (an organised 2x2 scan with a NaN pixel, dropped by load_points) and a v.5 header
    without VERSION, COUNT, VIEWPOINT or POINTS (POINTS defaults to WIDTH * HEIGHT)."""
    body = b"0 0 0\nnan nan nan\n1 1 1\n2 2 2\n"
    path = tmp_path / "organised.pcd"
    path.write_bytes(pcd_bytes(body, VERSION=None, COUNT=None, VIEWPOINT=None, POINTS=None, WIDTH="2", HEIGHT="2"))
    assert parse_pcd_header(path.read_bytes()).points == 4
    np.testing.assert_array_equal(load_points(path), [[0, 0, 0], [1, 1, 1], [2, 2, 2]])
