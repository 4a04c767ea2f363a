// The onnxscope explorer page: asks the server (/explore/NAME/...) and draws what it answers.
// Maps arrive as {shape, data: base64 float32}; they are coloured here with the report's
// display options (sign, percentile clip, overlay opacity). No framework, no network but this
// server.
"use strict";

const model = document.body.dataset.model;
const base = "/explore/" + encodeURIComponent(model);
const $ = (id) => document.getElementById(id);
let state = null; // the server's /state answer for the current input
let overlay = null; // {plane: {h, w, values}, caption} drawn over the input
let outputOverlay = null; // a plane drawn over the output (a column, a left singular vector)
let redraws = []; // what to colour again when a display option changes
let marks = {input: null, output: null}; // {y, x, h, w} outlined on a canvas: a pixel, a crop

// -- talking to the server ---------------------------------------------------------------------
async function ask(path, options) {
  const response = await fetch(base + path, options);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function say(text) {
  const box = $("message");
  box.textContent = text;
  box.hidden = !text;
}

async function guarded(work) {
  try {
    say("");
    await work();
  } catch (error) {
    say(error.message);
  }
}

function decode(entry) {
  const bytes = Uint8Array.from(atob(entry.data), (c) => c.charCodeAt(0));
  return {shape: entry.shape, values: new Float32Array(bytes.buffer)};
}

// -- maps as planes (H×W) ---------------------------------------------------------------------
// A tensor of the input (layout NCHW or NHWC) or of an image output (NCHW) summed over its
// channels; `channel` picks one instead.
function plane(tensor, layout, channel) {
  let shape = tensor.shape.slice();
  if (shape.length === 4) shape = shape.slice(1);
  if (shape.length < 2) return {h: 1, w: tensor.values.length, values: tensor.values};
  if (shape.length === 2) return {h: shape[0], w: shape[1], values: tensor.values};
  const nhwc = layout === "NHWC";
  const [c, h, w] = nhwc ? [shape[2], shape[0], shape[1]] : shape;
  const out = new Float32Array(h * w);
  for (let k = 0; k < c; k++) {
    if (channel !== undefined && channel !== k) continue;
    for (let i = 0; i < h * w; i++) out[i] += tensor.values[nhwc ? i * c + k : k * h * w + i];
  }
  return {h, w, values: out};
}

function options() {
  return {
    sign: $("sign").value,
    clip: Math.min(100, Math.max(50, Number($("clip").value) || 99.5)),
    alpha: Number($("alpha").value),
  };
}

function part(v, sign) {
  if (sign === "positive") return Math.max(v, 0);
  if (sign === "negative") return Math.min(v, 0);
  return sign === "absolute" ? Math.abs(v) : v;
}

// the colour scale's end: the clip percentile of |part|
function limit(values, opts) {
  const sorted = Float32Array.from(values, (v) => Math.abs(part(v, opts.sign))).sort();
  const top = sorted[Math.floor((opts.clip / 100) * (sorted.length - 1))];
  return top > 0 ? top : Math.max(sorted[sorted.length - 1], 1e-30);
}

const RED = [178, 24, 43], WHITE = [247, 247, 247], BLUE = [33, 102, 172];
function mix(a, b, t) {
  return [0, 1, 2].map((i) => a[i] + (b[i] - a[i]) * t);
}
function colour(v, lim, sign) {
  const t = Math.max(-1, Math.min(1, part(v, sign) / lim));
  if (sign === "absolute") return mix([0, 0, 4], [252, 253, 191], Math.abs(t));
  return t >= 0 ? mix(WHITE, RED, t) : mix(WHITE, BLUE, -t);
}

// the input picture (H×W×3 or H×W in [0, 1]) as RGB per pixel
function pictureRGB(picture) {
  const [h, w] = picture.shape;
  const rgb = picture.shape.length === 3 && picture.shape[2] === 3;
  return {h, w, at: (i) => (rgb ? [0, 1, 2].map((k) => 255 * picture.values[3 * i + k])
                                : [0, 1, 2].map(() => 255 * picture.values[i]))};
}

// draw a plane coloured (over a background picture at the overlay opacity, when given)
function draw(canvas, map, background) {
  const opts = options();
  const lim = map ? limit(map.values, opts) : 1;
  const h = map ? map.h : background.h, w = map ? map.w : background.w;
  canvas.width = w;
  canvas.height = h;
  const context = canvas.getContext("2d");
  const image = context.createImageData(w, h);
  for (let i = 0; i < h * w; i++) {
    let rgb = map ? colour(map.values[i], lim, opts.sign) : background.at(i);
    if (map && background && background.h === h && background.w === w) {
      const under = background.at(i).map((v) => 0.6 * v + 0.4 * 128); // the input, dimmed
      rgb = mix(under, rgb, opts.alpha);
    }
    image.data.set([rgb[0], rgb[1], rgb[2], 255], 4 * i);
  }
  context.putImageData(image, 0, 0);
  return lim;
}

// outline a box (a clicked pixel: h = w = 1, drawn a little larger) in green on a canvas
function outline(canvas, box) {
  if (!box) return;
  const context = canvas.getContext("2d");
  const pad = box.h * box.w === 1 ? Math.max(1, Math.round(canvas.width / 60)) : 0;
  context.strokeStyle = "#00c853";
  context.lineWidth = Math.max(0.3, canvas.width / 160); // about 2-3 screen pixels
  context.strokeRect(box.x - pad, box.y - pad, box.w + 2 * pad, box.h + 2 * pad);
}

// a canvas pixel from a mouse event on a canvas shown scaled
function pixelOf(canvas, event) {
  const box = canvas.getBoundingClientRect();
  const x = Math.floor(((event.clientX - box.left) / box.width) * canvas.width);
  const y = Math.floor(((event.clientY - box.top) / box.height) * canvas.height);
  return {y: Math.min(Math.max(y, 0), canvas.height - 1), x: Math.min(Math.max(x, 0), canvas.width - 1)};
}

function fmt(v) {
  return Math.abs(v) >= 1e-3 && Math.abs(v) < 1e4 ? v.toFixed(4) : v.toExponential(3);
}

// -- the panels --------------------------------------------------------------------------------
function drawInput() {
  const picture = pictureRGB(decode(state.picture));
  const lim = draw($("input"), overlay && overlay.plane, picture);
  outline($("input"), marks.input);
  $("input-caption").textContent = overlay
    ? `${overlay.caption} (colour scale ±${fmt(lim)})`
    : "The input as the model sees it (channels stretched together).";
}

function drawOutput() {
  if (state.kind !== "image") return;
  const y = decode(state.y);
  const [, c, h, w] = state.output.shape;
  let lim;
  if (outputOverlay) {
    lim = draw($("output"), outputOverlay.plane, null);
    $("output-caption").textContent = `${outputOverlay.caption} (colour scale ±${fmt(lim)})`;
  } else {
    // the output itself: three channels as RGB, else channel 0 in gray, each stretched
    let lo = Infinity, hi = -Infinity;
    y.values.forEach((v) => { lo = Math.min(lo, v); hi = Math.max(hi, v); });
    const span = hi > lo ? hi - lo : 1;
    const at = (i) => [0, 1, 2].map((k) => (255 * (y.values[(c === 3 ? k : 0) * h * w + i] - lo)) / span);
    draw($("output"), null, {h, w, at});
    $("output-caption").textContent =
      `F(x), ${c} channel(s), from ${fmt(lo)} to ${fmt(hi)}. Click an output pixel for its row.`;
  }
  outline($("output"), marks.output);
}

function drawBars() {
  const classes = state.classes;
  const bars = $("bars");
  bars.replaceChildren();
  const order = classes.output.map((v, i) => i).sort((a, b) => classes.output[b] - classes.output[a]);
  const shown = order.slice(0, 12);
  const scale = Math.max(...shown.map((i) => Math.abs(classes.vote_sum[i]) + Math.abs(classes.bias[i])), 1e-30);
  for (const k of shown) {
    const row = document.createElement("button");
    row.className = "bar";
    row.dataset.class = k;
    const votes = classes.vote_sum[k], bias = classes.bias[k];
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = classes.labels[k];
    const track = document.createElement("span");
    track.className = "track";
    for (const [value, kind] of [[votes, "votes"], [bias, "biaspart"]]) {
      const piece = document.createElement("span");
      piece.className = `piece ${kind} ${value < 0 ? "negative" : ""}`;
      piece.style.width = `${(100 * Math.abs(value)) / scale}%`;
      track.append(piece);
    }
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = `${fmt(classes.output[k])} = ${fmt(votes)} + ${fmt(bias)}`;
    row.append(label, track, value);
    row.addEventListener("click", () => guarded(() => showVotes(k)));
    bars.append(row);
  }
  const top = order[0];
  $("decision").textContent = `The model's largest output is ${classes.labels[top]} ` +
    `(${fmt(classes.output[top])}): Σ votes ${fmt(classes.vote_sum[top])} + bias ${fmt(classes.bias[top])}.`;
  $("class-caption").textContent = `${classes.output.length} outputs, the ${shown.length} largest ` +
    "shown; bar lengths |Σ votes| (dark) and |bias| (light), red positive, blue negative. " +
    "Click one to overlay its votes.";
}

async function showVotes(k) {
  const got = await ask(`/votes?class=${k}`);
  overlay = {plane: plane(decode(got.votes), state.input.layout),
             caption: `Votes of ${got.label}: Σ votes ${fmt(got.vote_sum)} + bias ${fmt(got.bias)} = ` +
                      `${fmt(got.output)}; the bias is ${(100 * got.bias_share).toFixed(1)} % of it.`};
  drawInput();
  $("class-caption").textContent = overlay.caption;
}

async function showRow(at) {
  const got = await ask(`/row?c=${at.c}&y=${at.y}&x=${at.x}`);
  const row = plane(decode(got.row), state.input.layout);
  overlay = {plane: row, caption: `Row of output (${got.at.join(", ")}) = ${fmt(got.value)}: what it looks at`};
  outputOverlay = null;
  const [, , oh, ow] = state.output.shape;
  const under = {y: Math.floor((at.y * row.h) / oh), x: Math.floor((at.x * row.w) / ow), h: 1, w: 1};
  marks = {input: under, output: {y: at.y, x: at.x, h: 1, w: 1}};
  drawInput();
  drawOutput();
  drawZoom(row, got.at);
}

// the row cut to the box where it is not zero (its support), with a margin; where the support
// is most of the input, a window around the position (the input's pixel under the output's)
function drawZoom(row, at) {
  let y0 = row.h, y1 = -1, x0 = row.w, x1 = -1;
  for (let i = 0; i < row.h * row.w; i++) {
    if (row.values[i] === 0) continue;
    const y = Math.floor(i / row.w), x = i % row.w;
    y0 = Math.min(y0, y); y1 = Math.max(y1, y); x0 = Math.min(x0, x); x1 = Math.max(x1, x);
  }
  $("zoom-panel").hidden = false;
  if (y1 < 0) {
    $("zoom-caption").textContent = "This row is zero: the output pixel looks at nothing here.";
    return;
  }
  let what = "its support";
  if ((y1 - y0 + 1) * (x1 - x0 + 1) > (row.h * row.w) / 4) {
    const [, , oh, ow] = state.output.shape;
    const cy = Math.floor((at[1] * row.h) / oh), cx = Math.floor((at[2] * row.w) / ow);
    const r = Math.max(6, Math.floor(Math.min(row.h, row.w) / 6));
    [y0, y1, x0, x1] = [cy - r, cy + r, cx - r, cx + r];
    what = `a window of ±${r} px around it (the row reaches most of the input)`;
  }
  y0 = Math.max(0, y0 - 2); x0 = Math.max(0, x0 - 2);
  y1 = Math.min(row.h - 1, y1 + 2); x1 = Math.min(row.w - 1, x1 + 2);
  const h = y1 - y0 + 1, w = x1 - x0 + 1;
  const values = new Float32Array(h * w);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) values[y * w + x] = row.values[(y0 + y) * row.w + x0 + x];
  const lim = draw($("zoom"), {h, w, values}, null);
  $("zoom-caption").textContent = `Input rows ${y0}–${y1}, columns ${x0}–${x1}: ${what}; ` +
    `output (${at.join(", ")}), colour scale ±${fmt(lim)}.`;
}

async function showColumn(at) {
  const got = await ask(`/column?c=${at.c}&y=${at.y}&x=${at.x}`);
  const tensor = decode(got.column);
  const column = state.kind === "image" ? plane(tensor, "NCHW") : plane(tensor);
  outputOverlay = {plane: column, caption: `Column of input (${got.at.join(", ")}): where it goes`};
  marks = {input: {y: at.y, x: at.x, h: 1, w: 1}, output: null};
  if (state.kind === "image") {
    drawOutput();
    drawInput();
  } else {
    overlay = null;
    drawInput();
    $("class-caption").textContent = `Column of input (${got.at.join(", ")}): ` +
      Array.from(tensor.values, fmt).slice(0, 12).join(", ");
  }
}

async function showSingular(crop) {
  // up to 3 triplets, and no more than the smaller side of the cropped operator has
  const outputs = state.output.shape.reduce((a, b) => a * b, 1);
  const k = Math.min(3, state.kind === "image" ? crop.h * crop.w : outputs);
  const got = await ask(`/svd?y=${crop.y}&x=${crop.x}&h=${crop.h}&w=${crop.w}&k=${k}`);
  const vt = decode(got.Vt), u = decode(got.U);
  const box = $("singular");
  box.replaceChildren();
  const perV = vt.values.length / got.s.length, perU = u.values.length / got.s.length;
  got.s.forEach((s, i) => {
    const figure = document.createElement("figure");
    const vCanvas = document.createElement("canvas");
    vCanvas.className = "map small";
    const v = {shape: vt.shape.slice(1), values: vt.values.slice(i * perV, (i + 1) * perV)};
    draw(vCanvas, plane(v, state.input.layout), null);
    figure.append(vCanvas);
    if (state.kind === "image") {
      const uCanvas = document.createElement("canvas");
      uCanvas.className = "map small";
      const uu = {shape: u.shape.slice(1), values: u.values.slice(i * perU, (i + 1) * perU)};
      draw(uCanvas, plane(uu, "NCHW"), null);
      figure.append(uCanvas);
    }
    const caption = document.createElement("figcaption");
    caption.textContent = `σ${i + 1} = ${fmt(s)}` + (state.kind === "image" ? " (v over the input, u over the output)" : " (v over the input)");
    figure.append(caption);
    box.append(figure);
  });
  marks = {input: crop, output: state.kind === "image" ? crop : null};
  drawInput();
  drawOutput();
  $("svd-panel").hidden = false;
  $("svd-caption").textContent = `Crop at (${crop.y}, ${crop.x}), ${crop.h}×${crop.w}: A v = σ u.`;
}

async function showBias() {
  const got = await ask("/bias");
  const bias = plane(decode(got.bias), "NCHW");
  $("bias-panel").hidden = false;
  redraws.push(() => {
    const lim = draw($("bias"), bias, null);
    const norm = (values) => Math.sqrt(values.reduce((sum, v) => sum + v * v, 0));
    const share = norm(decode(got.bias).values) / Math.max(norm(decode(state.y).values), 1e-30);
    $("bias-caption").textContent = `‖c_x‖ / ‖F(x)‖ = ${share.toFixed(3)}: the part of the ` +
      `output no input pixel moves. Summed over output channels; colour scale ±${fmt(lim)}.`;
  });
  redraws[redraws.length - 1]();
}

async function showBadge() {
  const got = await ask("/verify");
  const badge = $("badge");
  badge.className = "badge " + (got.exact ? "exact" : "inexact");
  badge.textContent = `${got.exact ? "exact" : "NOT exact"}: reconstruction ${got.reconstruction.toExponential(1)}, ` +
    `linearity ${got.linearity.toExponential(1)}, adjoint ${got.adjoint.toExponential(1)} (≤ ${got.tolerance})`;
}

async function showMask() {
  const layer = $("layer").value;
  if (!layer) return;
  const channel = $("channel").value;
  const got = await ask(`/masks?layer=${encodeURIComponent(layer)}` + (channel === "" ? "" : `&channel=${channel}`));
  const map = decode(got.map);
  const [h, w] = map.shape.length === 2 ? map.shape : [1, map.values.length];
  // decisions as they are: 0 black, 1 white (a mean over channels in gray); frozen values
  // (gains, statistics) stretched from their smallest to their largest
  let lo = 0, hi = 1;
  if (!got.binary) {
    lo = Math.min(...map.values);
    hi = Math.max(...map.values);
  }
  const span = hi > lo ? hi - lo : 1;
  const at = (i) => [0, 1, 2].map(() => (255 * (map.values[i] - lo)) / span);
  draw($("mask"), null, {h, w, at});
  const which = channel === "" ? "mean over channels" : `channel ${channel}`;
  $("mask-caption").textContent = `${layer} ${JSON.stringify(got.shape)}: ` + (got.binary
    ? `on/off decisions, white = on (${(100 * got.on).toFixed(1)} % on), ${which}`
    : `frozen values, black ${fmt(lo)} to white ${fmt(hi)}, ${which}`);
}

function showState(answer) {
  state = answer;
  overlay = outputOverlay = null;
  marks = {input: null, output: null};
  redraws = [];
  const conv = state.conventions;
  $("conventions").textContent = `Input: ${conv.source}; ${conv.original_size.join("×")} → ` +
    `${conv.size.join("×")}, ${conv.layout}, ${conv.color}, pixel·${Number(conv.scale).toPrecision(4)} ` +
    `− mean ${conv.mean.join(",")}, / std ${conv.std.join(",")}` + (conv.notes.length ? `; ${conv.notes.join("; ")}` : "");
  $("output-panel").hidden = state.kind !== "image";
  $("classes-panel").hidden = state.kind === "image";
  $("zoom-panel").hidden = true;
  $("svd-panel").hidden = true;
  drawInput();
  drawOutput();
  if (state.kind === "image") guarded(showBias);
  else drawBars();
  const select = $("layer");
  select.replaceChildren(...state.layers.map((l) => new Option(`${l.name} ${JSON.stringify(l.shape)}`, l.name)));
  guarded(showMask);
  guarded(showBadge);
}

async function upload(file) {
  if (file.size > state.limits.upload_bytes) throw new Error(`The file is over ${state.limits.upload_bytes} bytes.`);
  showState(await ask("/input", {method: "POST", body: file, headers: {"X-Filename": encodeURIComponent(file.name.slice(0, 80))}}));
}

// -- events ------------------------------------------------------------------------------------
// the channel a click reads: of the output pixel (rows) or of the input pixel (columns)
function pixelChannel() {
  return Math.max(0, Math.floor(Number($("pixel-channel").value) || 0));
}

function wire() {
  const input = $("input");
  let pressed = null;
  input.addEventListener("mousedown", (e) => { pressed = pixelOf(input, e); e.preventDefault(); });
  input.addEventListener("mouseup", (e) => {
    if (!pressed) return;
    const end = pixelOf(input, e), start = pressed;
    pressed = null;
    const h = Math.abs(end.y - start.y) + 1, w = Math.abs(end.x - start.x) + 1;
    if (h * w > 1) {
      const crop = {y: Math.min(start.y, end.y), x: Math.min(start.x, end.x), h, w};
      guarded(() => showSingular(crop));
    } else guarded(() => showColumn({c: pixelChannel(), ...end}));
  });
  const output = $("output");
  output.addEventListener("click", (e) => guarded(() => showRow({c: pixelChannel(), ...pixelOf(output, e)})));
  for (const id of ["sign", "clip", "alpha"]) {
    $(id).addEventListener("change", () => { drawInput(); drawOutput(); redraws.forEach((r) => r()); });
  }
  $("layer").addEventListener("change", () => guarded(showMask));
  $("channel").addEventListener("change", () => guarded(showMask));
  $("file").addEventListener("change", (e) => e.target.files[0] && guarded(() => upload(e.target.files[0])));
  const panel = $("input-panel");
  panel.addEventListener("dragover", (e) => { e.preventDefault(); panel.classList.add("dropping"); });
  panel.addEventListener("dragleave", () => panel.classList.remove("dropping"));
  panel.addEventListener("drop", (e) => {
    e.preventDefault();
    panel.classList.remove("dropping");
    const file = e.dataTransfer.files[0];
    if (file) guarded(() => upload(file));
  });
}

wire();
guarded(async () => showState(await ask("/state")));
