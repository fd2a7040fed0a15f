"""shapediff.viz: Open3D viewer, browser viewer, headless rendering to PNG (no Open3D), grids and turntable GIFs."""

from shapediff.viz.items import PALETTE, Camera, VizItem, as_items
from shapediff.viz.render import render, render_array, render_grid, render_overlay, render_samples, turntable
from shapediff.viz.viewer import has_display, show
from shapediff.viz.web import WebViewer, serve

__all__ = ["PALETTE", "Camera", "VizItem", "as_items", "render", "render_array", "render_grid", "render_overlay", "render_samples", "turntable", "has_display", "show", "WebViewer", "serve"]
