"""A browser viewer for machines without a display (e.g. a remote GPU server reached over ssh).

``serve(items)`` starts Python's own ``http.server`` in a background thread; it serves one
self-contained page (``viz.web_page``: HTML + a small WebGL2 script, no external asset) and the
geometry, so nothing beyond shapediff's pip dependencies is needed and nothing is fetched from the
internet. Open the printed URL locally, or from a laptop after ``ssh -L PORT:localhost:PORT host``.

Routes: ``/`` the page, ``/scene.json`` the items' metadata, ``/scene.bin`` their geometry
(little-endian float32 positions and normals, uint32 faces; offsets in scene.json).
"""

from __future__ import annotations

import errno
import ipaddress
import json
import math
import socket
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Sequence

import numpy as np

from shapediff.viz.items import VizItem, as_items, bounding_sphere
from shapediff.viz.raster import corner_normals
from shapediff.viz.web_page import PAGE

__all__ = ["WebViewer", "scene_payload", "serve"]


def grid_offsets(items: Sequence[VizItem], up: str) -> list[np.ndarray]:
    """(3,) translations laying items out in a near-square grid of equal cells, left to right then
    downwards along the up axis, each item centred in its cell."""
    ncols = math.ceil(math.sqrt(len(items)))
    spheres = [bounding_sphere([it]) for it in items]
    cell = 2.3 * max(r for _, r in spheres)
    down = np.array([0.0, -1.0, 0.0]) if up == "y" else np.array([0.0, 0.0, -1.0])
    right = np.array([1.0, 0.0, 0.0])
    return [(k % ncols) * cell * right + (k // ncols) * cell * down - c for k, (c, _) in enumerate(spheres)]


def scene_payload(items: Sequence[VizItem], up: str = "y") -> tuple[dict[str, Any], bytes]:
    """The scene as JSON-able metadata and one binary blob (see the module docstring).

    Metadata per item: label, color, vertices (V; 3 F for a mesh, one per face corner), faces (F, 0 for
    a cloud), byte offsets of its positions (V, 3) float32, normals (V, 3) float32 (meshes) and faces
    (F, 3) uint32, its radius,
    and an anchor point for its label; plus the scene's centre, radius, up axis and total bytes.
    """
    chunks: list[bytes] = []
    offset = 0
    metas = []
    placed = []

    def add(array: np.ndarray) -> int:
        nonlocal offset
        data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        start = offset
        chunks.append(data)
        offset += len(data)
        return start

    for it, shift in zip(items, grid_offsets(items, up)):
        pts = (it.points + shift).astype(np.float32)
        meta: dict[str, Any] = {"label": it.label, "color": list(it.color), "vertices": len(pts), "faces": 0}
        if it.is_mesh and len(it.faces):
            # One vertex per face corner, so creases stay sharp (a box) while curved parts stay smooth.
            corners = pts[it.faces].reshape(-1, 3)
            meta.update(vertices=len(corners), faces=len(it.faces), position_offset=add(corners),
                        normal_offset=add(corner_normals(it.points, it.faces).reshape(-1, 3).astype(np.float32)),
                        face_offset=add(np.arange(3 * len(it.faces), dtype=np.uint32)))
        else:
            meta["position_offset"] = add(pts)
        center, radius = bounding_sphere([VizItem(pts.astype(np.float64), None, "", (0, 0, 0))])
        lift = np.array([0.0, 1.0, 0.0]) if up == "y" else np.array([0.0, 0.0, 1.0])
        meta.update(radius=float(radius), anchor=(center + 1.05 * radius * lift).tolist())
        metas.append(meta)
        placed.append(VizItem(pts.astype(np.float64), None, "", (0, 0, 0)))
    center, radius = bounding_sphere(placed)
    scene = {"items": metas, "center": center.tolist(), "radius": float(radius), "up": up, "bytes": offset}
    return scene, b"".join(chunks)


@dataclass
class WebViewer:
    """A running viewer: ``url``; ``close()`` stops it; ``wait()`` blocks until Ctrl-C, then stops it."""

    server: ThreadingHTTPServer
    thread: threading.Thread
    url: str
    requests: list[str] = field(default_factory=list)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def wait(self) -> None:
        try:
            while self.thread.is_alive():
                self.thread.join(timeout=0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.close()


def _host_allowed(header: str | None) -> bool:
    """A Host header naming this machine: an IP address, localhost or its own host name. A DNS-rebinding page
    reaches the viewer under its own domain name, which is refused (403)."""
    if not header:
        return False
    name = header.rsplit(":", 1)[0] if header.count(":") == 1 or header.startswith("[") else header
    name = name.strip("[]").lower()
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return name in {"localhost", socket.gethostname().lower(), socket.getfqdn().lower()}


class _Server(ThreadingHTTPServer):
    """The viewer's server: IPv6 for an IPv6 host; a client that drops a download is not an error to print."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):  # BrokenPipe / ConnectionReset: the browser went away
            return
        super().handle_error(request, client_address)


def _handler(routes: dict[str, tuple[str, bytes]], log: list[str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802  (http.server's name)
            path = self.path.split("?", 1)[0]
            log.append(path)
            if not _host_allowed(self.headers.get("Host")):
                self.send_error(403, "this viewer answers requests for this machine's own names and addresses only")
                return
            if path not in routes:
                self.send_error(404, f"no such file: {path}")
                return
            kind, body = routes[path]
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (quiet: the page polls nothing)
            return

    return Handler


def serve(*items: Any, labels: Sequence[str] | None = None, colors: Sequence[Sequence[float]] | None = None,
          host: str = "127.0.0.1", port: int = 8765, up: str = "y") -> WebViewer:
    """Serve clouds and meshes to a browser at ``http://host:port/`` from a background thread.

    items: as ``shapediff.viz.show`` (each argument one item; a single list, dict or (B, N, 3) batch
    is spread out); labels / colors: one per item; host: the interface to listen on (the default
    127.0.0.1 keeps it private to this machine: reach it over ``ssh -L``); port: 0 picks a free one;
    up: the data's up axis, "y" or "z". Returns a ``WebViewer`` (``.url``, ``.close()``, ``.wait()``).
    """
    if isinstance(port, bool) or not isinstance(port, (int, np.integer)) or not 0 <= port <= 65535:
        raise ValueError(f"port: expected an int in [0, 65535] (0: any free port), got {port!r}")
    if up not in ("y", "z"):
        raise ValueError(f"up: expected 'y' or 'z', got {up!r}")
    its = as_items(items[0] if len(items) == 1 else list(items), labels, colors)
    scene, blob = scene_payload(its, up)
    routes = {"/": ("text/html; charset=utf-8", PAGE.encode()),
              "/scene.json": ("application/json", json.dumps(scene).encode()),
              "/scene.bin": ("application/octet-stream", blob)}
    log: list[str] = []
    try:
        server = _Server((host, int(port)), _handler(routes, log))
    except OSError as err:
        if err.errno in (errno.EADDRINUSE, errno.EACCES):
            raise ValueError(f"port: cannot listen on port {port} of {host} ({err.strerror or err}); pick another "
                             "with --port or 0 for any free port") from err
        raise ValueError(f"host: cannot listen on {host!r} ({err.strerror or err}); give an address of this machine "
                         "(127.0.0.1, ::1, 0.0.0.0 or :: for every interface)") from err
    thread = threading.Thread(target=server.serve_forever, name="shapediff-web-viewer", daemon=True)
    thread.start()
    bound_host, bound_port = server.server_address[:2]
    return WebViewer(server, thread, f"http://{_url_host(bound_host)}:{bound_port}/", log)


def _url_host(bound: str) -> str:
    """The host part of a URL that reaches a server bound to ``bound``: localhost for a loopback address, this
    machine's name for every interface (0.0.0.0 / ::, which no browser can open), else the address itself."""
    if bound in ("127.0.0.1", "::1"):
        return "localhost"
    if bound in ("0.0.0.0", "::"):
        return socket.gethostname()
    return f"[{bound}]" if ":" in bound else bound
