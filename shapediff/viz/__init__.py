"""shapediff.viz: Open3D viewer, headless rendering to PNG, grids and turntable GIFs."""

from shapediff.viz.items import PALETTE, Camera, VizItem, as_items
from shapediff.viz.render import render, render_array, render_grid, turntable
from shapediff.viz.viewer import has_display, show

__all__ = ["PALETTE", "Camera", "VizItem", "as_items", "render", "render_array", "render_grid", "turntable", "has_display", "show"]
