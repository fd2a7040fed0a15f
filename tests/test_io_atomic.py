"""shapediff.io_atomic: the one atomic-write path (hidden temp file beside the target, fsync, os.replace).

Each writer is driven to fail at every stage (inside the writer, at fsync, at the rename) with an
exception, a KeyboardInterrupt and a full disk: the destination keeps its previous bytes (or does
not appear) and no temporary file is left. The old helpers are checked to be this same path.
"""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from shapediff import io_atomic
from shapediff.io_atomic import write_atomic, write_bytes_atomic, write_json_atomic, write_path_atomic, write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
WRITERS = {
    "write_atomic": lambda p, data: write_atomic(p, lambda fh: fh.write(data)),
    "write_path_atomic": lambda p, data: write_path_atomic(p, lambda tmp: tmp.write_bytes(data)),
    "write_bytes_atomic": write_bytes_atomic,
    "write_text_atomic": lambda p, data: write_text_atomic(p, data.decode()),
}


class Boom(Exception):
    pass


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_writes_whole_file_and_leaves_nothing_else(tmp_path, writer):
    target = tmp_path / "sub" / "a.txt"  # the folder is created
    assert WRITERS[writer](target, b"new content") == target
    assert target.read_bytes() == b"new content" and _files(target.parent) == ["a.txt"]
    WRITERS[writer](target, b"v2")
    assert target.read_bytes() == b"v2" and _files(target.parent) == ["a.txt"]


def _fail_in_writer(exc):
    def write(fh_or_path):
        data = b"half of the new"
        fh_or_path.write_bytes(data) if isinstance(fh_or_path, Path) else fh_or_path.write(data)
        raise exc
    return write


FAULTS = {"exception": Boom("writer failed"), "interrupt": KeyboardInterrupt(), "disk_full": OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))}


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("stage", ["writer", "fsync", "rename"])
@pytest.mark.parametrize("kind", ["stream", "path"])
def test_failure_keeps_previous_file_and_removes_the_temp(tmp_path, monkeypatch, kind, stage, fault):
    exc = FAULTS[fault]
    kept, fresh = tmp_path / "kept.bin", tmp_path / "fresh.bin"
    kept.write_bytes(b"previous")
    if stage == "writer":
        write = _fail_in_writer(exc)
    else:
        write = (lambda fh: fh.write(b"the new content")) if kind == "stream" else (lambda tmp: tmp.write_bytes(b"new"))

        def fail(*_a, **_k):
            raise exc
        monkeypatch.setattr(os, "fsync" if stage == "fsync" else "replace", fail)
    call = write_atomic if kind == "stream" else write_path_atomic
    for dest in (kept, fresh):
        with pytest.raises(type(exc)) as err:
            call(dest, write, "test file")
        if isinstance(exc, OSError):  # re-raised naming what and where, same errno
            assert err.value.errno == errno.ENOSPC and str(dest) in str(err.value) and "test file" in str(err.value)
            assert "No space left on device" in str(err.value) and "previous content is kept" in str(err.value)
    monkeypatch.undo()
    assert kept.read_bytes() == b"previous" and not fresh.exists()
    assert _files(tmp_path) == ["kept.bin"]


def test_oserror_keeps_its_subclass(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "replace", lambda *_: (_ for _ in ()).throw(OSError(errno.EACCES, "Permission denied")))
    with pytest.raises(PermissionError, match="could not write file .*Permission denied"):
        write_bytes_atomic(tmp_path / "x", b"1")


def test_temp_files_are_hidden_and_named_after_the_target(tmp_path):
    """Folder readers skip names starting with '.': the temp file is seen mid-write and checked."""
    seen = {}

    def stream(fh):
        seen["stream"] = _files(tmp_path)
        fh.write(b"x")

    def by_path(tmp):
        seen["path"] = (_files(tmp_path), tmp.name)
        np.save(tmp, np.zeros(3))  # np.save appends .npy unless the name ends with it: the suffix is kept

    write_atomic(tmp_path / "cloud.npy", stream)
    write_path_atomic(tmp_path / "cloud2.npy", by_path)
    [stream_tmp] = [n for n in seen["stream"] if n != "cloud.npy"]
    assert re.fullmatch(r"\.cloud\.npy\.[^/]+\.tmp", stream_tmp), stream_tmp
    names, path_tmp = seen["path"]
    assert path_tmp in names and re.fullmatch(r"\.cloud2\.npy\.[^/]+\.tmp\.npy", path_tmp), path_tmp
    assert _files(tmp_path) == ["cloud.npy", "cloud2.npy"]
    np.testing.assert_array_equal(np.load(tmp_path / "cloud2.npy"), np.zeros(3))


def test_data_is_fsynced_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    write_bytes_atomic(tmp_path / "a", b"1")
    write_path_atomic(tmp_path / "b", lambda tmp: tmp.write_bytes(b"2"))
    assert events == ["fsync", "replace", "fsync", "replace"]


def test_write_json_atomic(tmp_path):
    path = write_json_atomic({"b": 1, "a": [1.5, None]}, tmp_path / "m.json")
    assert json.loads(path.read_text()) == {"a": [1.5, None], "b": 1} and path.read_text().startswith('{\n  "a"')
    with pytest.raises(TypeError):
        write_json_atomic({"x": object()}, path)  # fails before any file is made
    assert _files(tmp_path) == ["m.json"] and json.loads(path.read_text())["b"] == 1


def test_no_other_module_renames_files_into_place():
    """One concept, one home: no file of the package or its scripts makes temp files or renames them itself."""
    offenders = []
    for path in sorted([*ROOT.glob("shapediff/**/*.py"), *ROOT.glob("scripts/*.py")]):
        if path.name == "io_atomic.py":
            continue
        text = path.read_text()
        for pattern in (r"\bos\.replace\(", r"\bos\.rename\(", r"\bmkstemp\(", r"NamedTemporaryFile\(", r"\.replace\((tmp|stem|path)\b"):
            offenders += [f"{path.relative_to(ROOT)}: {pattern}" for _ in re.finditer(pattern, text)]
    assert not offenders, offenders


# ------------------------------------------------------------------------------- folders written as a set
def _write_set(path: Path, files: dict[str, str], **kwargs) -> None:
    with io_atomic.write_dir_atomic(path, "output folder", **kwargs) as tmp:
        for name, text in files.items():
            (tmp / name).write_text(text)


def test_a_folder_is_replaced_whole(tmp_path):
    out = tmp_path / "out"
    _write_set(out, {"a.ply": "1", "b.ply": "2"})
    _write_set(out, {"a.ply": "new"})  # the first run's b.ply does not survive beside the second run's files
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["a.ply"]
    assert (out / "a.ply").read_text() == "new" and _files(tmp_path) == ["out"]


def test_a_failed_set_keeps_the_previous_folder_and_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    _write_set(out, {"a.ply": "1"})
    with pytest.raises(Boom):
        with io_atomic.write_dir_atomic(out, "output folder") as tmp:
            (tmp / "a.ply").write_text("half")
            raise Boom()
    assert (out / "a.ply").read_text() == "1" and _files(tmp_path) == ["out"]


def test_a_folder_with_other_files_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / ".git").mkdir()
    with pytest.raises(ValueError, match=r"output folder '.*out': holds files that shapediff did not write there "
                                         r"as one set \(.git, notes.txt\)"):
        _write_set(out, {"a.ply": "1"})
    assert _files(out) == [".git", "notes.txt"] and _files(tmp_path) == ["out"]
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")  # a directory written before sets: its own names may be replaced
    _write_set(model_dir, {"config.json": "{ }"}, replaceable=("config.json",))
    assert _files(model_dir) == ["config.json"]  # no manifest needed when every name is replaceable


def test_a_kill_between_the_two_renames_leaves_the_previous_folder_findable(tmp_path):
    """The state a SIGKILL between ``rename(old aside)`` and ``rename(new in)`` leaves: no folder, the previous one
    aside, the new one complete in its temporary folder. Readers find the previous one; the next write puts it
    back before replacing it, and removes the rest."""
    out = tmp_path / "out"
    _write_set(out, {"a.ply": "old"})
    os.rename(out, tmp_path / ".out.abcd1234.old")
    (tmp_path / ".out.zyxw9876.tmp").mkdir()
    (tmp_path / ".out.zyxw9876.tmp" / "a.ply").write_text("new")
    assert io_atomic.resolve_dir(out) == tmp_path / ".out.abcd1234.old"
    _write_set(out, {"c.ply": "third"})
    assert _files(tmp_path) == ["out"] and (out / "c.ply").read_text() == "third"


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_respect_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_text_atomic(tmp_path / "f.txt", "x")
        _write_set(tmp_path / "set", {"a.txt": "x"})
    finally:
        os.umask(old)
    for path, full in ((tmp_path / "f.txt", 0o666), (tmp_path / "set" / "a.txt", 0o666), (tmp_path / "set", 0o777)):
        assert path.stat().st_mode & 0o777 == full & ~umask, (path, oct(path.stat().st_mode))
