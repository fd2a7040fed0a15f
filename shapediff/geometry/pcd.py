"""A strict reader for PCL's ``.pcd`` point-cloud files (header spec: pointclouds.org, "The PCD file format").

Why our own reader: Open3D's PCD reader trusts the header and crashes the process (SIGSEGV) on
values such as ``COUNT 2147483647`` or ``SIZE -1``, and fills the missing data of a truncated
file with zeros. Here the header is parsed and checked first (every field's form, the counts,
``POINTS == WIDTH * HEIGHT``, the declared data size against the bytes the file holds), then
``ascii`` and ``binary`` data are read with numpy; only ``binary_compressed`` (LZF) data is handed
to Open3D, after its two size words have been checked as well. Every problem raises ``ValueError``
naming the header field (or ``DATA``), what was expected and what the file holds; the caller
(:func:`shapediff.geometry.load_points`) adds the file's path.
"""

from __future__ import annotations

import math
import re
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np

# Keys in the order the spec writes them; VERSION, COUNT, HEIGHT, VIEWPOINT and POINTS may be absent.
KEYS = ("VERSION", "FIELDS", "SIZE", "TYPE", "COUNT", "WIDTH", "HEIGHT", "VIEWPOINT", "POINTS", "DATA")
DATA_KINDS = ("ascii", "binary", "binary_compressed")
MAX_COUNT = 4096  # largest per-field COUNT accepted (PCL's widest descriptor, ShapeContext1980, has 1980)
MAX_HEADER_BYTES = 1 << 20  # a header (comments included) longer than this is not a PCD header
LZF_MAX_RATIO = 88  # LZF's longest back reference: 3 input bytes -> 264 output bytes
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_UINT = re.compile(r"^\d+$")
_SIZES = {"I": (1, 2, 4, 8), "U": (1, 2, 4, 8), "F": (4, 8)}


class PcdHeader(NamedTuple):
    """A checked PCD header; ``data_offset`` is the byte where the data section starts."""

    fields: tuple[str, ...]
    sizes: tuple[int, ...]
    types: tuple[str, ...]
    counts: tuple[int, ...]
    width: int
    height: int
    points: int
    data: str
    data_offset: int

    @property
    def point_step(self) -> int:
        """Bytes per point in binary data."""
        return sum(s * c for s, c in zip(self.sizes, self.counts))

    def offset_of(self, field: str, *, values: bool = False) -> int:
        """Byte offset (or value index with ``values=True``) of ``field`` within one point."""
        i = self.fields.index(field)
        return sum(c if values else s * c for s, c in zip(self.sizes[:i], self.counts[:i]))


def _fail(field: str, expected: str, got: object) -> ValueError:
    return ValueError(f"PCD header {field}: expected {expected}, got {got!r}")


def _header_lines(data: bytes) -> tuple[dict[str, list[str]], int]:
    """Header entries (key -> tokens) up to and including DATA, and the offset just after its line."""
    entries: dict[str, list[str]] = {}
    pos = 0
    while "DATA" not in entries:
        end = data.find(b"\n", pos)
        if end < 0 or end > MAX_HEADER_BYTES:
            missing = [k for k in ("FIELDS", "SIZE", "TYPE", "DATA") if k not in entries]
            raise _fail(missing[0] if missing else "DATA", "a header line ending in a newline", "end of header data")
        raw, pos = data[pos:end], end + 1
        try:
            line = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            raise _fail("line", "ASCII text before the DATA line", raw[:40]) from None
        if not line or line.startswith("#"):
            continue
        key, *tokens = line.split()
        if key not in KEYS:
            raise _fail("line", f"one of {', '.join(KEYS)} or a '#' comment", line[:60])
        if key in entries:
            raise _fail(key, "the key once", f"a second {key} line")
        entries[key] = tokens
    return entries, pos


def _uint(entries: dict[str, list[str]], key: str, default: int | None = None) -> int:
    tokens = entries.get(key)
    if tokens is None:
        if default is None:
            raise _fail(key, "the line to be present", "no such line")
        return default
    if len(tokens) != 1 or not _UINT.match(tokens[0]):
        raise _fail(key, "one non-negative integer", " ".join(tokens))
    return int(tokens[0])


def _per_field(entries: dict[str, list[str]], key: str, n: int, default: list[str] | None = None) -> list[str]:
    tokens = entries.get(key, default)
    if tokens is None:
        raise _fail(key, "the line to be present", "no such line")
    if len(tokens) != n:
        raise _fail(key, f"{n} values (one per FIELDS entry)", " ".join(tokens))
    return tokens


def parse_pcd_header(data: bytes) -> PcdHeader:
    """Parse and check the header at the start of ``data`` (a whole .pcd file's bytes)."""
    entries, offset = _header_lines(data)
    fields = entries.get("FIELDS") or []
    if not fields or any(not _NAME.match(f) for f in fields):
        raise _fail("FIELDS", "field names such as 'x y z'", " ".join(fields))
    named = [f for f in fields if f != "_"]  # "_" marks padding and may repeat
    if len(set(named)) != len(named) or not {"x", "y", "z"} <= set(named):
        raise _fail("FIELDS", "distinct names including x, y and z", " ".join(fields))
    n = len(fields)
    size_tok = _per_field(entries, "SIZE", n)
    type_tok = _per_field(entries, "TYPE", n)
    count_tok = _per_field(entries, "COUNT", n, ["1"] * n)
    for key, tokens in (("SIZE", size_tok), ("COUNT", count_tok)):
        if any(not _UINT.match(t) for t in tokens):
            raise _fail(key, "non-negative integers", " ".join(tokens))
    sizes, counts = tuple(map(int, size_tok)), tuple(map(int, count_tok))
    for f, s, t, c in zip(fields, sizes, type_tok, counts):
        if t not in _SIZES:
            raise _fail("TYPE", "I, U or F per field", " ".join(type_tok))
        if s not in _SIZES[t]:
            raise _fail("SIZE", f"one of {_SIZES[t]} bytes for field {f!r} of TYPE {t}", s)
        xyz = f in ("x", "y", "z")
        if not 1 <= c <= (1 if xyz else MAX_COUNT):
            raise _fail("COUNT", f"1 for field {f!r}" if xyz else f"1..{MAX_COUNT} for field {f!r}", c)
    width, height = _uint(entries, "WIDTH"), _uint(entries, "HEIGHT", 1)
    points = _uint(entries, "POINTS", width * height)
    if points != width * height:
        raise _fail("POINTS", f"WIDTH * HEIGHT = {width} * {height} = {width * height}", points)
    if "VIEWPOINT" in entries:
        vp = entries["VIEWPOINT"]
        try:
            ok = len(vp) == 7 and all(math.isfinite(float(v)) for v in vp)
        except ValueError:
            ok = False
        if not ok:
            raise _fail("VIEWPOINT", "7 finite numbers (tx ty tz qw qx qy qz)", " ".join(vp))
    if "VERSION" in entries and len(entries["VERSION"]) != 1:
        raise _fail("VERSION", "one token such as 0.7", " ".join(entries["VERSION"]))
    kind = entries["DATA"]
    if len(kind) != 1 or kind[0] not in DATA_KINDS:
        raise _fail("DATA", " or ".join(DATA_KINDS), " ".join(kind))
    return PcdHeader(tuple(fields), sizes, tuple(type_tok), counts, width, height, points, kind[0], offset)


def _read_ascii(h: PcdHeader, body: bytes) -> np.ndarray:
    per_point = sum(h.counts)
    if 2 * h.points * per_point - 1 > len(body):  # each value takes a character and a separator
        raise _fail("POINTS", f"at most {(len(body) + 1) // (2 * per_point)} points in {len(body)} bytes of ascii data",
                    h.points)
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise _fail("DATA", "ascii text after 'DATA ascii'", "non-ASCII bytes") from None
    rows = [r for r in text.splitlines() if r.strip()]
    tokens = text.split()
    if len(rows) != h.points or len(tokens) != h.points * per_point:
        raise _fail("DATA", f"POINTS = {h.points} rows of {per_point} values",
                    f"{len(rows)} rows, {len(tokens)} values")
    try:
        values = np.array(tokens).astype(np.float64).reshape(h.points, per_point)
    except ValueError as err:  # numpy: "could not convert string to float: 'abc'"
        raise _fail("DATA", "numbers in the ascii data", str(err).rpartition(": ")[2]) from None
    return values[:, [h.offset_of(a, values=True) for a in "xyz"]]


def _xyz_dtype(h: PcdHeader) -> np.dtype:
    """x, y, z of one little-endian point record (other fields skipped by the offsets)."""
    formats = [f"<{h.types[h.fields.index(a)].lower()}{h.sizes[h.fields.index(a)]}" for a in "xyz"]
    return np.dtype({"names": list("xyz"), "formats": formats, "offsets": [h.offset_of(a) for a in "xyz"],
                     "itemsize": h.point_step})


def _read_binary(h: PcdHeader, data: bytes) -> np.ndarray:
    have = len(data) - h.data_offset
    need = h.points * h.point_step
    if have < need:
        raise _fail("POINTS", f"at most {have // h.point_step} points of {h.point_step} bytes in {have} bytes of "
                    "binary data", h.points)
    rec = np.frombuffer(data, dtype=_xyz_dtype(h), count=h.points, offset=h.data_offset)
    return np.stack([rec[a].astype(np.float64) for a in "xyz"], axis=1)


def _check_compressed(h: PcdHeader, data: bytes) -> None:
    have = len(data) - h.data_offset - 8
    if have < 0:
        raise _fail("DATA", "8 bytes of sizes after 'DATA binary_compressed'", f"{have + 8} bytes")
    packed, unpacked = struct.unpack_from("<II", data, h.data_offset)
    if packed > have:
        raise _fail("DATA", f"a compressed size of at most the {have} bytes that follow", packed)
    if unpacked != h.points * h.point_step:
        raise _fail("DATA", f"an uncompressed size of POINTS * {h.point_step} = {h.points * h.point_step} bytes",
                    unpacked)
    if unpacked > LZF_MAX_RATIO * packed:  # refuse before Open3D allocates `unpacked` bytes
        raise _fail("DATA", f"an uncompressed size of at most {LZF_MAX_RATIO} x the compressed size {packed} (LZF's "
                    "largest expansion)", unpacked)


def read_pcd(path: str | Path) -> np.ndarray:
    """Read a .pcd file's x, y, z as float64 (N, 3) (NaN rows of organised clouds kept).

    Raises ValueError naming the bad header field or the data section; ``load_points`` is the
    public entry point (it adds the path, drops non-finite rows and casts to float32).
    """
    data = Path(path).read_bytes()
    h = parse_pcd_header(data)
    if h.data == "ascii":
        return _read_ascii(h, data[h.data_offset :])
    if h.data == "binary":
        return _read_binary(h, data)
    _check_compressed(h, data)
    from shapediff._optional import require_open3d  # noqa: PLC0415

    o3d = require_open3d()
    cloud = o3d.io.read_point_cloud(str(path), format="pcd", remove_nan_points=False, remove_infinite_points=False)
    pts = np.asarray(cloud.points, dtype=np.float64)
    if len(pts) != h.points:
        raise _fail("DATA", f"POINTS = {h.points} points in the compressed data", f"{len(pts)} decoded by Open3D")
    return pts
