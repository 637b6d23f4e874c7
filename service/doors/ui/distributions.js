// The panels that use q(z|x) as a distribution, not a point: an encoded image's nearest reference
// items (/neighbors), two images' posteriors overlaid with the four measures (/compare), and the
// decoding of a click on a t-SNE map (not invertible: the kernel-weighted mean of the nearest
// reference items' mu, from /latent_map's `mu`).
"use strict";

const Dist = (() => {
  const $ = (id) => document.getElementById(id);
  const NS = "http://www.w3.org/2000/svg";
  const K_MAP = 10; // reference points a t-SNE click averages

  // A {z} or {x} endpoint -> a flat image the API can encode (a prior sample is decoded first).
  async function imageOf(pick) {
    const src = await pick.get();
    if (src.x) return src.x;
    return (await VAE.post("/decode", { z: [src.z], output_format: "json" })).outputs[0].flat(2);
  }

  // The k reference items nearest to one image (the 2-Wasserstein distance between posteriors,
  // /neighbors' default), drawn with label and distance.
  async function neighbours(x, k = 5) {
    const r = await VAE.post("/neighbors", { inputs: [x], k });
    const box = $("encode-neighbours");
    box.replaceChildren();
    r.indices[0].forEach((index, j) => {
      const fig = document.createElement("figure");
      fig.className = "neighbour";
      fig.dataset.index = String(index);
      const cv = document.createElement("canvas");
      cv.className = "cell";
      VAE.drawImage(cv, r.outputs[0][j]);
      const cap = document.createElement("figcaption");
      const label = r.labels ? `label ${r.labels[0][j]} · ` : "";
      cap.textContent = `#${index} · ${label}W2 ${r.scores[0][j].toFixed(3)}`;
      fig.append(cv, cap);
      box.appendChild(fig);
    });
    return r.indices[0];
  }

  // mu +- sigma of A and B per latent dimension as translucent bands on the same axis (where they
  // overlap the colours mix), the means as ticks.
  function drawOverlay(svg, a, b) {
    const W = Number(svg.getAttribute("width")), H = Number(svg.getAttribute("height"));
    const all = [a, b].flatMap((d) => d.mu.map((m, i) => Math.abs(m) + d.sigma[i]));
    const lim = Math.max(1, ...all), n = a.mu.length, step = W / n;
    const y = (v) => H / 2 - (v / lim) * (H / 2 - 10);
    const el = (tag, attrs) => {
      const node = document.createElementNS(NS, tag);
      for (const [key, v] of Object.entries(attrs)) node.setAttribute(key, String(v));
      svg.appendChild(node);
    };
    svg.replaceChildren();
    el("line", { x1: 0, x2: W, y1: H / 2, y2: H / 2, stroke: "#999" });
    for (const [d, name, color] of [[a, "a", "#1f77b4"], [b, "b", "#ff7f0e"]]) {
      d.mu.forEach((m, i) => {
        const x = i * step + step * 0.15;
        el("rect", { x, width: step * 0.7, y: y(m + d.sigma[i]), height: y(m - d.sigma[i]) - y(m + d.sigma[i]),
          fill: color, "fill-opacity": 0.4, class: `band-${name}` });
        el("line", { x1: x, x2: x + step * 0.7, y1: y(m), y2: y(m), stroke: color, "stroke-width": 2, class: `mu-${name}` });
      });
    }
  }

  async function compare(pickA, pickB) {
    const [xa, xb] = await Promise.all([imageOf(pickA), imageOf(pickB)]);
    const [enc, cmp] = await Promise.all([VAE.post("/encode", { inputs: [xa, xb] }),
      VAE.post("/compare", { a: [xa], b: [xb] })]);
    const shape = JSON.parse(document.body.dataset.shape);
    VAE.drawImage($("compare-a"), VAE.nest(xa, shape));
    VAE.drawImage($("compare-b"), VAE.nest(xb, shape));
    drawOverlay($("compare-bars"), { mu: enc.mu[0], sigma: enc.sigma[0] },
      { mu: enc.mu[1], sigma: enc.sigma[1] });
    const rows = [["overlap (Bhattacharyya coefficient)", cmp.overlap[0]],
      ["Bhattacharyya distance D_B", cmp.bhattacharyya[0]], ["KL(q_A ‖ q_B)", cmp.kl_ab[0]],
      ["KL(q_B ‖ q_A)", cmp.kl_ba[0]], ["2-Wasserstein", cmp.w2[0]]].map(([name, v]) => {
      const tr = document.createElement("tr");
      for (const text of [name, v.toPrecision(4)]) {
        const td = document.createElement("td"); td.textContent = text; tr.appendChild(td);
      }
      return tr;
    });
    document.querySelector("#compare-measures tbody").replaceChildren(...rows);
    $("compare-measures").dataset.done = "1";
  }

  // A click at xy on the t-SNE plane -> z: the K_MAP nearest reference points in the plane,
  // weights exp(-d^2 / 2h^2) with h their largest distance, the weighted mean of their mu.
  function tsneLatent(map, xy) {
    const near = map.points.map((p, i) => [Math.hypot(p[0] - xy[0], p[1] - xy[1]), i])
      .sort((u, v) => u[0] - v[0] || u[1] - v[1]).slice(0, K_MAP);
    const h = Math.max(near[near.length - 1][0], 1e-9);
    const w = near.map(([d]) => Math.exp(-(d * d) / (2 * h * h)));
    const total = w.reduce((s, v) => s + v, 0);
    const z = map.mu[0].map((_, j) => near.reduce((s, [, i], t) => s + w[t] * map.mu[i][j], 0) / total);
    return { z, indices: near.map(([, i]) => i) };
  }

  return { imageOf, neighbours, compare, drawOverlay, tsneLatent, K_MAP };
})();
