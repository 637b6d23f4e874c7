// The explorer's plumbing: calls to the service's public endpoints (docs/API.md), images
// drawn exactly (one canvas pixel per model pixel, value round(255 * v)), images turned into
// model inputs, and the endpoint pickers (prior sample, uploaded file, or a drawing).
"use strict";

const VAE = (() => {
  const base = new URL("../", window.location.href); // the page lives at <service>/ui/
  // the model comes from the page's address (?model=name): picking another one reloads the
  // page, so that every panel and picker is rebuilt for that model's shapes
  const state = { version: null, token: sessionStorage.getItem("vae-token") || "",
    model: new URLSearchParams(window.location.search).get("model") };

  function setStatus(text, isError = false) {
    const el = document.getElementById("status");
    el.textContent = text;
    el.classList.toggle("error", isError);
  }

  async function post(path, body = {}) {
    const headers = { "Content-Type": "application/json" };
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    const payload = { ...body };
    if (state.model) payload.model = state.model;
    if (state.version) payload.version = state.version;
    const r = await fetch(new URL(path.replace(/^\//, ""), base), {
      method: "POST", headers, body: JSON.stringify(payload),
    });
    const data = await r.json().catch(() => ({ error: `${r.status} ${r.statusText}` }));
    if (r.status === 401) document.getElementById("auth").hidden = false;
    if (!r.ok) throw new Error(`${path}: ${data.error || r.status}`);
    return data;
  }

  // Run an action, report its failure in the status line instead of the console.
  async function guarded(label, fn) {
    setStatus(`${label}…`);
    try {
      await fn();
      setStatus(`${label}: done`);
    } catch (err) {
      setStatus(String(err.message || err), true);
    }
  }

  const clamp = (v) => Math.min(1, Math.max(0, v));

  // item: nested [C][H][W] in [0, 1] -> the canvas becomes W x H, pixel = round(255 * v).
  function drawImage(canvas, item) {
    const c = item.length, h = item[0].length, w = item[0][0].length;
    canvas.width = w;
    canvas.height = h;
    const ctx = canvas.getContext("2d");
    const img = ctx.createImageData(w, h);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const o = 4 * (y * w + x);
        for (let k = 0; k < 3; k++) img.data[o + k] = Math.round(255 * clamp(item[c === 1 ? 0 : k][y][x]));
        img.data[o + 3] = 255;
      }
    }
    ctx.putImageData(img, 0, 0);
  }

  function drawGrid(container, items, cls = "cell") {
    container.replaceChildren();
    items.forEach((item, i) => {
      const cv = document.createElement("canvas");
      cv.className = cls;
      cv.dataset.index = String(i);
      drawImage(cv, item);
      container.appendChild(cv);
    });
  }

  // Any drawable (canvas, <img>) -> flat [C * H * W] model input in [0, 1]: area-averaged down to
  // H x W (drawn at k times the size first, then k x k blocks averaged), inverted when asked
  // (the data sets are light ink on a dark background).
  function toInput(src, shape, invert) {
    const [c, h, w] = shape, k = 8;
    const cv = document.createElement("canvas");
    cv.width = w * k;
    cv.height = h * k;
    const ctx = cv.getContext("2d");
    ctx.fillStyle = invert ? "#fff" : "#000";
    ctx.fillRect(0, 0, cv.width, cv.height);
    ctx.drawImage(src, 0, 0, cv.width, cv.height);
    const px = ctx.getImageData(0, 0, cv.width, cv.height).data;
    const out = new Array(c * h * w).fill(0);
    for (let y = 0; y < h * k; y++) {
      for (let x = 0; x < w * k; x++) {
        const o = 4 * (y * w * k + x), cell = Math.floor(y / k) * w + Math.floor(x / k);
        for (let ch = 0; ch < c; ch++) {
          const v = c === 1 ? (px[o] + px[o + 1] + px[o + 2]) / 3 : px[o + ch];
          out[ch * h * w + cell] += v / 255 / (k * k);
        }
      }
    }
    return invert ? out.map((v) => 1 - v) : out;
  }

  // flat [C*H*W] -> nested [C][H][W], for drawing what the model is given
  function nest(flat, [c, h, w]) {
    return Array.from({ length: c }, (_, ch) => Array.from({ length: h },
      (_, y) => flat.slice(ch * h * w + y * w, ch * h * w + (y + 1) * w)));
  }

  function drawingPad(canvas, shape) {
    const ctx = canvas.getContext("2d");
    const clear = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height); };
    clear();
    ctx.strokeStyle = "#fff";
    ctx.lineCap = ctx.lineJoin = "round";
    ctx.lineWidth = Math.max(16, (canvas.width / shape[1]) * 1.3); // ~MNIST's stroke width
    let last = null;
    const at = (e) => {
      const r = canvas.getBoundingClientRect();
      return [(e.clientX - r.left) * (canvas.width / r.width), (e.clientY - r.top) * (canvas.height / r.height)];
    };
    canvas.addEventListener("pointerdown", (e) => { last = at(e); canvas.dataset.drawn = "1"; });
    canvas.addEventListener("pointermove", (e) => {
      if (!last) return;
      const p = at(e);
      ctx.beginPath(); ctx.moveTo(...last); ctx.lineTo(...p); ctx.stroke();
      last = p;
    });
    window.addEventListener("pointerup", () => { last = null; });
    return clear;
  }

  // An endpoint chooser inside a <fieldset>: returns { get() -> {z} | {x} }.
  function picker(fieldset, shape, defaultSeed) {
    const name = fieldset.dataset.name, id = fieldset.id;
    fieldset.innerHTML = `<legend>${name}</legend>
      <label><input type="radio" name="${id}-mode" value="sample" checked> prior sample, seed
        <input class="seed" type="number" min="0" value="${defaultSeed}"></label>
      <canvas class="shown" title="the prior sample this endpoint uses"></canvas><br>
      <label><input type="radio" name="${id}-mode" value="upload"> upload
        <input class="file" type="file" accept="image/*"></label><br>
      <label><input type="radio" name="${id}-mode" value="draw"> draw</label>
      <button class="clear" type="button">clear</button>
      <label><input class="invert" type="checkbox"> invert (dark ink on light paper)</label><br>
      <div class="pad-wrap"><canvas class="pad" width="${shape[2] * 8}" height="${shape[1] * 8}"></canvas>
        <span class="pad-hint">draw here</span></div>
      <img class="preview" alt="" hidden>`;
    const q = (s) => fieldset.querySelector(s);
    const clear = drawingPad(q(".pad"), shape);
    q(".clear").addEventListener("click", () => {
      clear(); q(".pad").dataset.drawn = ""; q(".pad-hint").hidden = false;
    });
    q(".pad").addEventListener("pointerdown", () => {
      q(`input[value="draw"]`).checked = true; q(".pad-hint").hidden = true;
    });
    q(".file").addEventListener("change", () => {
      const f = q(".file").files[0];
      if (!f) return;
      q(`input[value="upload"]`).checked = true;
      const url = URL.createObjectURL(f);
      q(".preview").onload = () => {
        const x = toInput(q(".preview"), shape, false);
        q(".invert").checked = x.reduce((a, b) => a + b, 0) / x.length > 0.5; // light paper
      };
      q(".preview").src = url;
      q(".preview").hidden = false;
    });
    return {
      mode: () => q(`input[name="${id}-mode"]:checked`).value,
      async get() {
        const mode = this.mode();
        if (mode === "sample") {
          const seed = Number(q(".seed").value);
          const r = await post("/sample", { n: 1, seed, output_format: "json" });
          drawImage(q(".shown"), r.outputs[0]); // which sample this endpoint is
          return { z: r.z[0] };
        }
        if (mode === "upload" && !q(".file").files[0]) throw new Error(`${name}: choose a file to upload`);
        const src = mode === "upload" ? q(".preview") : q(".pad");
        return { x: toInput(src, shape, q(".invert").checked) };
      },
    };
  }

  return { state, post, guarded, setStatus, drawImage, drawGrid, toInput, nest, picker };
})();
