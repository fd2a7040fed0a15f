"""The browser viewer's page: one self-contained HTML file with a small WebGL2 script (no external
script, font or asset, so it works offline). It fetches ``scene.json`` (item metadata) and
``scene.bin`` (little-endian float32 positions / normals and uint32 faces) from the server in
``shapediff.viz.web`` and draws clouds as lit discs and meshes with two-sided Lambert shading.

When the geometry has arrived and been drawn once, the page sets ``document.title`` to
"shapediff viewer: N points, F faces" and ``<body data-status="ready" data-points=N data-faces=F
data-items=K>`` (``data-status="error: ..."`` on failure), so scripts and tests can tell it loaded.
"""

PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>shapediff viewer: loading</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
html, body { margin: 0; height: 100%; overflow: hidden; background: #fff; font: 13px system-ui, sans-serif; }
canvas { display: block; width: 100%; height: 100%; cursor: grab; }
#panel { position: absolute; top: 8px; left: 8px; background: rgba(255,255,255,.85); padding: 6px 9px;
         border: 1px solid #ddd; border-radius: 4px; max-height: 90%; overflow: auto; }
#panel label { display: block; white-space: nowrap; }
#help { color: #777; margin-top: 4px; }
.tag { position: absolute; transform: translate(-50%, -100%); pointer-events: none; font-weight: 600; }
</style></head>
<body data-status="loading">
<canvas id="view"></canvas>
<div id="panel"><div id="items"></div>
<div id="help">drag: turn &middot; shift/right drag: pan &middot; wheel: zoom<br>+/-: point size &middot; double click: reset</div></div>
<script>
"use strict";
const canvas = document.getElementById("view");
const gl = canvas.getContext("webgl2", {antialias: true, preserveDrawingBuffer: true});
const state = {az: 35, el: 20, dist: 1, target: [0, 0, 0], pointScale: 1, items: [], scene: null, queued: false};

function fail(message) {
  document.body.dataset.status = "error: " + message;
  document.title = "shapediff viewer: error";
  document.getElementById("items").textContent = "Error: " + message;
}

// ---- small vector / matrix helpers (column-major 4x4, as WebGL expects)
const sub = (a, b) => [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
const norm = a => { const l = Math.hypot(a[0], a[1], a[2]) || 1; return [a[0] / l, a[1] / l, a[2] / l]; };
function lookAt(eye, target, up) {
  const f = norm(sub(target, eye)), r = norm(cross(f, up)), u = cross(r, f);
  return [r[0], u[0], -f[0], 0, r[1], u[1], -f[1], 0, r[2], u[2], -f[2], 0,
          -(r[0] * eye[0] + r[1] * eye[1] + r[2] * eye[2]), -(u[0] * eye[0] + u[1] * eye[1] + u[2] * eye[2]),
          f[0] * eye[0] + f[1] * eye[1] + f[2] * eye[2], 1];
}
function perspective(fovy, aspect, near, far) {
  const t = 1 / Math.tan(fovy / 2);
  return [t / aspect, 0, 0, 0, 0, t, 0, 0, 0, 0, (far + near) / (near - far), -1, 0, 0, 2 * far * near / (near - far), 0];
}
function mul(a, b) {  // a * b
  const o = new Array(16).fill(0);
  for (let c = 0; c < 4; c++) for (let r = 0; r < 4; r++) for (let k = 0; k < 4; k++) o[c * 4 + r] += a[k * 4 + r] * b[c * 4 + k];
  return o;
}

// ---- shaders: points as lit balls fading with depth; meshes two-sided Lambert from a head light
const POINT_VS = `#version 300 es
uniform mat4 mvp; uniform float size; uniform vec2 depthRange; in vec3 pos; out float far;
void main() { gl_Position = mvp * vec4(pos, 1.0); gl_PointSize = max(size / gl_Position.w, 1.5);
  far = clamp((gl_Position.w - depthRange.x) / (depthRange.y - depthRange.x), 0.0, 1.0); }`;
const POINT_FS = `#version 300 es
precision mediump float; uniform vec3 color; in float far; out vec4 outColor;
void main() { vec2 d = gl_PointCoord * 2.0 - 1.0; float rr = dot(d, d); if (rr > 1.0) discard;
  float ball = 0.62 + 0.38 * sqrt(1.0 - rr); if (rr > 0.6) ball *= 0.55;
  vec3 c = color * ball; outColor = vec4(c + (1.0 - c) * 0.55 * far, 1.0); }`;
const MESH_VS = `#version 300 es
uniform mat4 mvp; uniform mat4 view; in vec3 pos; in vec3 nrm; out vec3 vn;
void main() { gl_Position = mvp * vec4(pos, 1.0); vn = mat3(view) * nrm; }`;
const MESH_FS = `#version 300 es
precision mediump float; uniform vec3 color; in vec3 vn; out vec4 outColor;
void main() { vec3 n = normalize(vn); if (n.z < 0.0) n = -n;  // two-sided: open meshes show their inside lit
  float lambert = max(dot(n, normalize(vec3(-0.5, 0.7, 1.0))), 0.0);
  outColor = vec4(color * (0.25 + 0.75 * lambert), 1.0); }`;

function program(vsSource, fsSource) {
  const p = gl.createProgram();
  for (const [type, src] of [[gl.VERTEX_SHADER, vsSource], [gl.FRAGMENT_SHADER, fsSource]]) {
    const s = gl.createShader(type); gl.shaderSource(s, src); gl.compileShader(s);
    if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s));
    gl.attachShader(p, s);
  }
  gl.linkProgram(p);
  if (!gl.getProgramParameter(p, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(p));
  return p;
}

function buffer(target, data) { const b = gl.createBuffer(); gl.bindBuffer(target, b); gl.bufferData(target, data, gl.STATIC_DRAW); return b; }

function upload(scene, bin) {
  let points = 0, faces = 0;
  const list = document.getElementById("items");
  scene.items.forEach((it, i) => {
    const pos = new Float32Array(bin, it.position_offset, it.vertices * 3);
    const item = {meta: it, visible: true, vao: gl.createVertexArray(), count: it.vertices};
    gl.bindVertexArray(item.vao);
    const prog = it.faces ? meshProgram : pointProgram;
    gl.bindBuffer(gl.ARRAY_BUFFER, buffer(gl.ARRAY_BUFFER, pos));
    const loc = gl.getAttribLocation(prog, "pos"); gl.enableVertexAttribArray(loc); gl.vertexAttribPointer(loc, 3, gl.FLOAT, false, 0, 0);
    if (it.faces) {
      const nrm = new Float32Array(bin, it.normal_offset, it.vertices * 3);
      gl.bindBuffer(gl.ARRAY_BUFFER, buffer(gl.ARRAY_BUFFER, nrm));
      const nl = gl.getAttribLocation(prog, "nrm"); gl.enableVertexAttribArray(nl); gl.vertexAttribPointer(nl, 3, gl.FLOAT, false, 0, 0);
      buffer(gl.ELEMENT_ARRAY_BUFFER, new Uint32Array(bin, it.face_offset, it.faces * 3));
      item.count = it.faces * 3; faces += it.faces;
    } else { points += it.vertices; }
    gl.bindVertexArray(null);
    const row = document.createElement("label");
    const box = document.createElement("input"); box.type = "checkbox"; box.checked = true;
    box.onchange = () => { item.visible = box.checked; tag.style.display = box.checked ? "" : "none"; redraw(); };
    const rgb = it.color.map(c => Math.round(c * 255)).join(",");
    row.append(box, " ", Object.assign(document.createElement("span"), {textContent: `${it.label || "item " + i}`, style: `color: rgb(${rgb})`}),
               ` (${it.faces ? it.faces + " faces" : it.vertices + " points"})`);
    list.append(row);
    const tag = Object.assign(document.createElement("div"), {className: "tag", textContent: it.label, style: `color: rgb(${rgb})`});
    document.body.append(tag); item.tag = tag;
    state.items.push(item);
  });
  return {points, faces};
}

function reset() {
  const s = state.scene;
  const grid = s.items.length > 1;  // face the grid of items; a single item is seen from three-quarters
  state.az = grid ? 0 : 35; state.el = grid ? 12 : 20; state.target = s.center.slice();
  state.dist = s.radius / Math.sin(Math.PI / 12) * 1.1;
  redraw();
}

function frame() {
  state.queued = false;
  const s = state.scene, dpr = window.devicePixelRatio || 1;
  const w = Math.max(1, Math.round(canvas.clientWidth * dpr)), h = Math.max(1, Math.round(canvas.clientHeight * dpr));
  if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
  gl.viewport(0, 0, w, h); gl.clearColor(1, 1, 1, 1); gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
  gl.enable(gl.DEPTH_TEST);
  const az = state.az * Math.PI / 180, el = state.el * Math.PI / 180;
  const dir = s.up === "z" ? [Math.cos(el) * Math.sin(az), -Math.cos(el) * Math.cos(az), Math.sin(el)]
                           : [Math.cos(el) * Math.sin(az), Math.sin(el), Math.cos(el) * Math.cos(az)];
  const eye = state.target.map((t, k) => t + state.dist * dir[k]);
  const view = lookAt(eye, state.target, s.up === "z" ? [0, 0, 1] : [0, 1, 0]);
  const fovy = Math.PI / 6, near = Math.max(state.dist - 2 * s.radius, state.dist * 1e-3);
  const mvp = mul(perspective(fovy, w / h, near, state.dist + 2 * s.radius), view);
  // Disc diameter in pixels at unit depth: ~2.8 px for a 2048-point cloud filling a 256-pixel view.
  const pxPerUnit = h / 2 / Math.tan(fovy / 2);
  for (const item of state.items) {
    if (!item.visible) continue;
    const prog = item.meta.faces ? meshProgram : pointProgram;
    gl.useProgram(prog);
    gl.uniformMatrix4fv(gl.getUniformLocation(prog, "mvp"), false, new Float32Array(mvp));
    gl.uniform3fv(gl.getUniformLocation(prog, "color"), item.meta.color);
    gl.bindVertexArray(item.vao);
    if (item.meta.faces) {
      gl.uniformMatrix4fv(gl.getUniformLocation(prog, "view"), false, new Float32Array(view));
      gl.drawElements(gl.TRIANGLES, item.count, gl.UNSIGNED_INT, 0);
    } else {
      const spacing = item.meta.radius * 2.2 / Math.sqrt(item.meta.vertices);
      gl.uniform1f(gl.getUniformLocation(prog, "size"), state.pointScale * pxPerUnit * spacing * 0.5);
      gl.uniform2f(gl.getUniformLocation(prog, "depthRange"), state.dist - s.radius, state.dist + s.radius);
      gl.drawArrays(gl.POINTS, 0, item.count);
    }
  }
  gl.bindVertexArray(null);
  for (const item of state.items) {  // labels above each item
    const a = item.meta.anchor, clip = [0, 1, 2, 3].map(r => mvp[r] * a[0] + mvp[4 + r] * a[1] + mvp[8 + r] * a[2] + mvp[12 + r]);
    item.tag.style.left = ((clip[0] / clip[3] + 1) / 2 * canvas.clientWidth) + "px";
    item.tag.style.top = ((1 - clip[1] / clip[3]) / 2 * canvas.clientHeight - 4) + "px";
  }
}
function redraw() { if (!state.queued) { state.queued = true; requestAnimationFrame(frame); } }

// ---- interaction
let drag = null;
canvas.addEventListener("contextmenu", e => e.preventDefault());
canvas.addEventListener("pointerdown", e => { drag = {x: e.clientX, y: e.clientY, pan: e.shiftKey || e.button === 2}; canvas.setPointerCapture(e.pointerId); });
canvas.addEventListener("pointerup", () => { drag = null; });
canvas.addEventListener("pointermove", e => {
  if (!drag) return;
  const dx = e.clientX - drag.x, dy = e.clientY - drag.y; drag.x = e.clientX; drag.y = e.clientY;
  if (drag.pan) {
    const k = state.dist * 2 * Math.tan(Math.PI / 12) / canvas.clientHeight, az = state.az * Math.PI / 180;
    const right = state.scene.up === "z" ? [Math.cos(az), Math.sin(az), 0] : [Math.cos(az), 0, -Math.sin(az)];
    const upv = state.scene.up === "z" ? [0, 0, 1] : [0, 1, 0];
    state.target = state.target.map((t, i) => t - k * dx * right[i] + k * dy * upv[i]);
  } else { state.az -= dx * 0.4; state.el = Math.max(-89, Math.min(89, state.el + dy * 0.4)); }
  redraw();
});
canvas.addEventListener("wheel", e => { e.preventDefault(); state.dist *= Math.exp(e.deltaY * 0.001); redraw(); }, {passive: false});
canvas.addEventListener("dblclick", reset);
window.addEventListener("keydown", e => {
  if (e.key === "+" || e.key === "=") state.pointScale *= 1.25; else if (e.key === "-") state.pointScale /= 1.25; else return;
  redraw();
});
window.addEventListener("resize", redraw);

let pointProgram, meshProgram;
async function main() {
  if (!gl) { fail("this browser has no WebGL2"); return; }
  pointProgram = program(POINT_VS, POINT_FS); meshProgram = program(MESH_VS, MESH_FS);
  const [scene, bin] = await Promise.all([fetch("scene.json").then(r => r.json()), fetch("scene.bin").then(r => r.arrayBuffer())]);
  if (bin.byteLength !== scene.bytes) throw new Error(`scene.bin: expected ${scene.bytes} bytes, got ${bin.byteLength}`);
  state.scene = scene;
  const counts = upload(scene, bin);
  reset(); frame();
  document.body.dataset.points = counts.points; document.body.dataset.faces = counts.faces;
  document.body.dataset.items = scene.items.length; document.body.dataset.status = "ready";
  document.title = `shapediff viewer: ${counts.points} points, ${counts.faces} faces`;
}
main().catch(err => fail(err.message || String(err)));
</script></body></html>
"""
