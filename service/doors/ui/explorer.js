// The explorer's panels. Every number shown comes from one of the service's public endpoints:
// /model, /sample, /interpolate, /latent_map, /decode, /encode, /reconstruct (and, through
// distributions.js, /neighbors and /compare).
"use strict";

const $ = (id) => document.getElementById(id);
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
  "#7f7f7f", "#bcbd22", "#17becf"];
let model = null; // /model's answer
let map = null; // /latent_map's answer plus the plot's scale
let encodedMu = null; // the last encoded image's mu, marked on the (PCA) map
let encodedNear = []; // its nearest reference items, ringed on the map in either projection

async function loadModel() {
  model = await VAE.post("/model");
  const [c, h, w] = model.input.shape;
  $("model-info").textContent = `${model.name} v${model.version} · input ${c}×${h}×${w} · `
    + `latent ${model.latent_dim} · ${model.likelihood} · ${model.provider}`;
  const models = $("model");
  if (!models.options.length) {
    for (const m of model.models) models.add(new Option(m.name, m.name, false, m.name === model.name));
  }
  const sel = $("version");
  if (!sel.options.length) {
    for (const v of model.versions) sel.add(new Option(`v${v}`, String(v), false, v === model.version));
  }
  document.body.dataset.shape = JSON.stringify(model.input.shape);
  document.body.dataset.ready = "1";
}

let encodedX = null; // the last encoded image: "More like this" samples around it

async function sample() {
  const from = $("sample-prior").value, body = {
    n: Number($("sample-n").value), temperature: Number($("sample-temp").value),
    seed: Number($("sample-seed").value), output_format: "json",
  };
  if (from !== "standard") body.prior = "aggregate";
  if (from.startsWith("label:")) body.labels = [Number(from.slice(6))];
  if (from === "like") body.like = [encodedX];
  const r = await VAE.post("/sample", body);
  VAE.drawGrid($("sample-grid"), r.outputs);
  $("sample-grid").dataset.seed = $("sample-seed").value;
  $("sample-grid").dataset.prior = from;
}

function sampleSources() {
  // the data's classes once the reference set's labels are known; none without a reference set
  const sel = $("sample-prior"), keep = sel.value;
  while (sel.options.length > 1) sel.remove(1);
  if (map) sel.add(new Option("the data (reference posteriors)", "aggregate"));
  for (const lab of map && map.labels ? [...new Set(map.labels)].sort((a, b) => a - b) : []) {
    sel.add(new Option(`class ${lab}`, `label:${lab}`));
  }
  if (encodedX) sel.add(new Option("like the encoded image", "like"));
  sel.value = [...sel.options].some((o) => o.value === keep) ? keep : "standard";
}

let interp = null; // the last /interpolate answer

function showStep(i) {
  const steps = interp.outputs[0];
  VAE.drawImage($("interp-view"), steps[i]);
  $("interp-view").dataset.step = String(i);
  $("alpha-out").textContent = `step ${i + 1}/${steps.length}, α = ${(i / (steps.length - 1)).toFixed(3)}`;
  for (const cv of $("interp-strip").children) cv.classList.toggle("current", Number(cv.dataset.index) === i);
}

async function interpolate(pickA, pickB) {
  const [a, b] = await Promise.all([pickA.get(), pickB.get()]);
  const body = {
    steps: Number($("interp-steps").value), output_format: "json",
    method: document.querySelector('input[name="interp-method"]:checked').value,
  };
  if (a.x && b.x) { // two images: the API encodes them (their mu are the endpoints)
    Object.assign(body, { start: [a.x], end: [b.x] });
  } else { // a latent endpoint: images become their mu first
    const toZ = async (e) => e.z || (await VAE.post("/encode", { inputs: [e.x] })).mu[0];
    Object.assign(body, { start_z: [await toZ(a)], end_z: [await toZ(b)] });
  }
  interp = await VAE.post("/interpolate", body);
  VAE.drawGrid($("interp-strip"), interp.outputs[0]);
  const alpha = $("alpha");
  alpha.max = String(body.steps - 1);
  alpha.disabled = false;
  alpha.value = "0";
  showStep(0);
}

function plotMap() {
  const cv = $("map"), ctx = cv.getContext("2d"), pts = map.points;
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const lo = [Math.min(...xs), Math.min(...ys)], hi = [Math.max(...xs), Math.max(...ys)];
  const pad = 0.08, span = [hi[0] - lo[0] || 1, hi[1] - lo[1] || 1];
  map.toPx = ([x, y]) => [((x - lo[0]) / span[0] * (1 - 2 * pad) + pad) * cv.width,
    (1 - ((y - lo[1]) / span[1] * (1 - 2 * pad) + pad)) * cv.height];
  map.fromPx = ([px, py]) => [((px / cv.width) - pad) / (1 - 2 * pad) * span[0] + lo[0],
    ((1 - py / cv.height) - pad) / (1 - 2 * pad) * span[1] + lo[1]];
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, cv.width, cv.height);
  pts.forEach((p, i) => {
    const [x, y] = map.toPx(p);
    ctx.fillStyle = map.labels ? COLORS[map.labels[i] % COLORS.length] : "#555";
    ctx.fillRect(x - 1.5, y - 1.5, 3, 3);
  });
  const mark = (xy, color, size) => {
    const [x, y] = map.toPx(xy);
    ctx.strokeStyle = color; ctx.lineWidth = 2;
    ctx.beginPath(); ctx.arc(x, y, size, 0, 2 * Math.PI); ctx.stroke();
  };
  for (const i of encodedNear) mark(pts[i], "#d00", 5);
  if (map.clicked) mark(map.clicked, "#000", 6);
  if (encodedMu && map.projection === "pca") mark(project(encodedMu), "#d00", 9);
}

// A latent code's place on the map: the same PCA the reference points went through.
function project(z) {
  return map.projection_components.map((comp) => comp.reduce((s, c, i) => s + c * (z[i] - map.projection_mean[i]), 0));
}

async function loadMap() {
  const projection = $("map-projection").value;
  map = await VAE.post("/latent_map", { projection, with_mu: projection === "tsne" });
  $("map-proj").textContent = map.projection;
  const q = map.quality;
  $("map-quality").textContent = q && q.silhouette !== null
    ? `silhouette by label ${q.silhouette.toFixed(3)} · 5-NN accuracy in 2-D ${(100 * q.knn5_accuracy).toFixed(1)} %`
    : "";
  $("map-click").textContent = projection === "pca" ? "click the map: that point of the PCA plane is decoded"
    : `click the map: the weighted mean μ of the ${Dist.K_MAP} nearest reference points is decoded`;
  const legend = $("map-legend");
  legend.replaceChildren();
  if (map.labels) {
    for (const lab of [...new Set(map.labels)].sort((a, b) => a - b)) {
      const s = document.createElement("span");
      s.className = "swatch";
      s.textContent = `■ ${lab}`;
      s.style.color = COLORS[lab % COLORS.length];
      legend.appendChild(s);
    }
  }
  plotMap();
  sampleSources();
}

async function clickMap(e) {
  const cv = $("map"), r = cv.getBoundingClientRect();
  await decodeAt(map.fromPx([(e.clientX - r.left) * cv.width / r.width, (e.clientY - r.top) * cv.height / r.height]));
}

async function decodeAt(xy) { // a point of the map's plane, decoded
  let z, near = null;
  if (map.projection === "pca") { // back onto the PCA plane: z = mean + x * c1 + y * c2
    z = map.projection_mean.map((m, i) => m + xy[0] * map.projection_components[0][i]
      + xy[1] * map.projection_components[1][i]);
  } else { // t-SNE has no inverse: the nearest reference items' mu, kernel-weighted
    near = Dist.tsneLatent(map, xy);
    z = near.z;
  }
  const r2 = await VAE.post("/decode", { z: [z], output_format: "json" });
  VAE.drawImage($("map-decoded"), r2.outputs[0]);
  map.clicked = xy;
  $("map-click").textContent = `decoded (${xy[0].toFixed(2)}, ${xy[1].toFixed(2)})`;
  $("map-decoded").dataset.z = JSON.stringify(z);
  if (near) $("map-decoded").dataset.near = JSON.stringify(near.indices); // last: all is set
  plotMap();
}

function drawBars(mu, sigma) {
  const svg = $("encode-bars"), ns = "http://www.w3.org/2000/svg";
  const W = Number(svg.getAttribute("width")), H = Number(svg.getAttribute("height"));
  const lim = Math.max(1, ...mu.map((m, i) => Math.abs(m) + sigma[i]));
  const y = (v) => H / 2 - (v / lim) * (H / 2 - 10), step = W / mu.length;
  const el = (tag, attrs) => {
    const n = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
    svg.appendChild(n);
    return n;
  };
  svg.replaceChildren();
  el("line", { x1: 0, x2: W, y1: H / 2, y2: H / 2, stroke: "#999" });
  mu.forEach((m, i) => {
    const x = i * step + step / 2;
    el("rect", { x: x - step * 0.35, width: step * 0.7, y: Math.min(y(m), H / 2), height: Math.abs(y(m) - H / 2), fill: "#4a7ebb", class: "bar" });
    el("line", { x1: x, x2: x, y1: y(m - sigma[i]), y2: y(m + sigma[i]), stroke: "#222", class: "whisker" });
    for (const v of [m - sigma[i], m + sigma[i]]) el("line", { x1: x - step * 0.2, x2: x + step * 0.2, y1: y(v), y2: y(v), stroke: "#222" });
  });
}

async function encode(pick) {
  const x = await Dist.imageOf(pick);
  const [enc, rec] = await Promise.all([VAE.post("/encode", { inputs: [x] }),
    VAE.post("/reconstruct", { inputs: [x], output_format: "json" })]);
  VAE.drawImage($("encode-input"), VAE.nest(x, model.input.shape));
  VAE.drawImage($("encode-recon"), rec.outputs[0]);
  const mu = enc.mu[0], sigma = enc.sigma[0];
  drawBars(mu, sigma);
  const rows = mu.map((m, i) => {
    const tr = document.createElement("tr");
    for (const v of [`z${i + 1}`, m.toFixed(4), sigma[i].toFixed(4)]) {
      const td = document.createElement("td"); td.textContent = v; tr.appendChild(td);
    }
    return tr;
  });
  document.querySelector("#encode-values tbody").replaceChildren(...rows);
  encodedMu = mu;
  encodedX = x;
  sampleSources();
  if (map) plotMap();
  if (map) encodedNear = await Dist.neighbours(x); // a model without a reference set has no map
  if (map) plotMap();
}

async function start() {
  await VAE.guarded("loading the model", loadModel);
  if (!model) return;
  const shape = model.input.shape;
  const pickA = VAE.picker($("end-a"), shape, 1), pickB = VAE.picker($("end-b"), shape, 2);
  const pickE = VAE.picker($("encode-source"), shape, 3);
  $("sample-temp").addEventListener("input", () => { $("sample-temp-out").textContent = Number($("sample-temp").value).toFixed(1); });
  $("sample-go").addEventListener("click", () => VAE.guarded("sampling", sample));
  $("sample-reseed").addEventListener("click", () => {
    $("sample-seed").value = String(Math.floor(Math.random() * 1e6));
    VAE.guarded("sampling", sample);
  });
  $("interp-go").addEventListener("click", () => VAE.guarded("interpolating", () => interpolate(pickA, pickB)));
  $("alpha").addEventListener("input", () => showStep(Number($("alpha").value)));
  $("map").addEventListener("click", (e) => { if (map) VAE.guarded("decoding the clicked point", () => clickMap(e)); });
  $("encode-go").addEventListener("click", () => VAE.guarded("encoding", () => encode(pickE)));
  $("encode-like").addEventListener("click", () => VAE.guarded("sampling like the image", async () => {
    if (!encodedX) await encode(pickE);
    sampleSources();
    $("sample-prior").value = "like";
    await sample();
  }));
  const pickCA = VAE.picker($("cmp-a"), shape, 4), pickCB = VAE.picker($("cmp-b"), shape, 5);
  $("compare-go").addEventListener("click", () => VAE.guarded("comparing", () => Dist.compare(pickCA, pickCB)));
  $("map-projection").addEventListener("change", () => VAE.guarded("loading the latent map", loadMap));
  $("model").addEventListener("change", () => {
    const url = new URL(window.location.href);
    url.searchParams.set("model", $("model").value);
    window.location.assign(url); // every panel rebuilt for the other model's shapes
  });
  $("version").addEventListener("change", () => {
    VAE.state.version = Number($("version").value);
    encodedMu = null; encodedNear = []; // another version: another latent space
    VAE.guarded("switching version", async () => { await loadModel(); await loadMap(); await sample(); });
  });
  $("token-save").addEventListener("click", () => {
    VAE.state.token = $("token").value;
    sessionStorage.setItem("vae-token", VAE.state.token);
    window.location.reload();
  });
  // every panel filled on first load, each from its default inputs
  await VAE.guarded("sampling", sample);
  await VAE.guarded("loading the latent map", loadMap);
  await VAE.guarded("interpolating", () => interpolate(pickA, pickB));
  if (map) await VAE.guarded("decoding a map point", () => decodeAt(map.points[0]));
  await VAE.guarded("encoding", () => encode(pickE));
  await VAE.guarded("comparing", () => Dist.compare(pickCA, pickCB));
  document.body.dataset.loaded = "1";
}

window.addEventListener("DOMContentLoaded", start);
