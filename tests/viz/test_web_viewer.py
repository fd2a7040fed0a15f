"""The browser viewer: its geometry payload, its server, and `scripts/view.py --web` opened in
headless Chromium (Debian's `chromium` package; skipped with the reason where it is missing)."""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from shapediff.geometry import save_mesh, save_points
from shapediff.viz import as_items, serve
from shapediff.viz.web import grid_offsets, scene_payload

_ROOT = Path(__file__).resolve().parents[2]
_CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _decode(scene: dict, blob: bytes, k: int) -> tuple[np.ndarray, np.ndarray | None]:
    it = scene["items"][k]
    pos = np.frombuffer(blob, "<f4", it["vertices"] * 3, it["position_offset"]).reshape(-1, 3)
    faces = np.frombuffer(blob, "<u4", it["faces"] * 3, it["face_offset"]).reshape(-1, 3) if it["faces"] else None
    return pos, faces


def test_payload_carries_every_point_and_face():
    rng = np.random.default_rng(0)
    cloud = rng.normal(size=(300, 3))
    box = trimesh.creation.box(extents=(1.0, 2.0, 3.0))
    items = as_items({"cloud": cloud, "box": box})
    scene, blob = scene_payload(items)
    assert scene["bytes"] == len(blob)
    shifts = grid_offsets(items, "y")
    pos, faces = _decode(scene, blob, 0)
    np.testing.assert_allclose(pos, cloud + shifts[0], atol=1e-5)
    assert faces is None and scene["items"][0]["label"] == "cloud"
    pos, faces = _decode(scene, blob, 1)
    # One vertex per face corner: the triangles drawn are the mesh's own triangles, moved by the layout.
    np.testing.assert_allclose(pos[faces], box.triangles + shifts[1], atol=1e-5)
    normals = np.frombuffer(blob, "<f4", len(pos) * 3, scene["items"][1]["normal_offset"]).reshape(-1, 3)
    np.testing.assert_allclose(np.abs(normals).max(axis=1), 1.0, atol=1e-6)  # a box's creases stay sharp
    # The laid-out items do not overlap.
    lo0, hi0 = _decode(scene, blob, 0)[0].min(0), _decode(scene, blob, 0)[0].max(0)
    lo1, hi1 = pos.min(0), pos.max(0)
    assert hi0[0] < lo1[0] or hi1[0] < lo0[0] or hi0[1] < lo1[1] or hi1[1] < lo0[1]


def test_server_routes_and_errors():
    viewer = serve(np.ones((5, 3)) * np.arange(5)[:, None], port=0)
    try:
        page = urllib.request.urlopen(viewer.url, timeout=10).read().decode()
        assert "scene.json" in page and "<script" in page and "http" not in page.split("<script", 1)[1]  # no external asset
        scene = json.loads(urllib.request.urlopen(viewer.url + "scene.json", timeout=10).read())
        blob = urllib.request.urlopen(viewer.url + "scene.bin", timeout=10).read()
        assert scene["items"][0]["vertices"] == 5 and len(blob) == scene["bytes"] == 5 * 3 * 4
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(viewer.url + "etc/passwd", timeout=10)
    finally:
        viewer.close()
    for bad in (-1, 70000, "80", True):
        with pytest.raises(ValueError, match="port"):
            serve(np.ones((4, 3)), port=bad)
    with pytest.raises(ValueError, match="up"):
        serve(np.ones((4, 3)), port=0, up="x")


def _get(port: int, path: str, host_header: str, host: str = "127.0.0.1") -> int:
    """HTTP status of GET ``path`` sent with ``Host: host_header``."""
    import http.client

    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.putrequest("GET", path, skip_host=True)
    conn.putheader("Host", host_header)
    conn.endheaders()
    status = conn.getresponse().status
    conn.close()
    return status


def test_a_dns_rebinding_host_header_is_refused():
    """A page on evil.example whose name rebinds to 127.0.0.1 sends ``Host: evil.example``: refused (403); the
    machine's own names and any IP address are served."""
    viewer = serve(np.ones((5, 3)), port=0)
    port = viewer.server.server_address[1]
    try:
        assert _get(port, "/scene.bin", "evil.example") == 403
        assert _get(port, "/scene.bin", f"evil.example:{port}") == 403
        for ok in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost", f"{socket.gethostname()}:{port}",
                   f"[::1]:{port}", f"10.1.2.3:{port}"):
            assert _get(port, "/scene.bin", ok) == 200, ok
    finally:
        viewer.close()


def test_every_interface_prints_a_usable_url_and_ipv6_is_not_blamed_on_the_port():
    viewer = serve(np.ones((5, 3)), host="0.0.0.0", port=0)
    try:
        assert "localhost" not in viewer.url and "0.0.0.0" not in viewer.url and socket.gethostname() in viewer.url
    finally:
        viewer.close()
    try:
        viewer = serve(np.ones((5, 3)), host="::", port=0)
    except ValueError as err:  # a machine without IPv6: the host is named, not the port
        assert str(err).startswith("host: cannot listen on '::'"), err
    else:
        try:
            assert _get(viewer.server.server_address[1], "/", "localhost", host="::1") == 200
        finally:
            viewer.close()
    with pytest.raises(ValueError, match=r"^host: cannot listen on 'no.such.host.invalid'"):
        serve(np.ones((5, 3)), host="no.such.host.invalid", port=0)


def test_an_aborted_download_prints_no_traceback(capfd):
    viewer = serve(np.random.default_rng(0).normal(size=(300_000, 3)), port=0)  # a 3.6 MB scene.bin
    port = viewer.server.server_address[1]
    try:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port)) as conn:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                conn.sendall(b"GET /scene.bin HTTP/1.1\r\nHost: localhost\r\n\r\n")
                conn.recv(1024)  # the download started; closing now resets the connection
        time.sleep(1.0)
        assert _get(port, "/", "localhost") == 200  # still serving
    finally:
        viewer.close()
    assert "Traceback" not in capfd.readouterr().err


def _wait_for_line(proc: subprocess.Popen, marker: str, timeout: float) -> str:
    """Everything ``proc`` printed up to and including the first line holding ``marker`` (or until it
    exits or ``timeout`` seconds pass)."""
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            seen += line
            if marker in line or not line:
                return seen
        elif proc.poll() is not None:
            return seen
    return seen


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(_CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get install -y chromium); "
                                              "this test opens the --web page in it")
def test_view_script_web_page_loads_geometry_in_headless_chromium(tmp_path):
    n_points = 1500
    cloud = np.random.default_rng(1).normal(size=(n_points, 3)) * 0.4
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.6)
    save_points(tmp_path / "cloud.ply", cloud)
    save_mesh(tmp_path / "sphere.obj", mesh)
    port = _free_port()
    server = subprocess.Popen([sys.executable, str(_ROOT / "scripts" / "view.py"), str(tmp_path / "cloud.ply"),
                               str(tmp_path / "sphere.obj"), "--web", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
    try:
        seen = _wait_for_line(server, "serving", timeout=120)  # printed once the server listens
        assert f"localhost:{port}" in seen, seen
        shot = tmp_path / "viewer.png"
        browser = subprocess.run(
            [_CHROMIUM, "--headless", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
             "--window-size=800,600", "--virtual-time-budget=8000", f"--user-data-dir={tmp_path / 'profile'}",
             "--dump-dom", f"--screenshot={shot}", f"http://localhost:{port}/"],
            capture_output=True, text=True, timeout=120)
    finally:
        server.send_signal(signal.SIGINT)  # the script's Ctrl-C path closes the server
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
    body = re.search(r"<body[^>]*>", browser.stdout)
    assert body is not None, browser.stderr[-2000:]
    attrs = dict(re.findall(r'data-(\w+)="([^"]*)"', body.group(0)))
    assert attrs.get("status") == "ready", attrs
    assert int(attrs["points"]) == n_points and int(attrs["faces"]) == len(mesh.faces) and attrs["items"] == "2"
    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    drawn = (np.abs(image - 255).sum(-1) > 60)
    drawn[:160, :360] = False  # the item list in the corner is HTML, not geometry
    assert drawn.mean() > 0.02, f"screenshot {shot}: only {drawn.mean():.4f} of the pixels show geometry"
    orange = (image[..., 0] > 120) & (image[..., 2] < 90) & drawn  # the sphere's palette colour, lit
    assert orange.sum() > 500
