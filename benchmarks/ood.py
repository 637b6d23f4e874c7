"""`make ood`: out-of-distribution detection with the served scores, both directions (docs/
MODEL_QUALITY.md): the MNIST model scoring held-out MNIST digits against Fashion-MNIST items,
and the Fashion-MNIST model the other way round. AUROC (out-of-distribution items should
score higher) and cost per item of each score:

- neg_elbo, nll_iwae: /score's estimates (k draws);
- complexity: nll_iwae minus the item's length under a generic compressor (PNG, in nats):
  Serra et al. 2020's input-complexity correction (simple images get high likelihood from
  any model; the compressor says how simple an image is);
- latent W2: the 2-Wasserstein distance from the item's posterior to its nearest reference
  posterior (/neighbors' default measure): how far from anything the model was shown.

    python -m benchmarks.ood --repository models --mnist data/mnist --fashion data/fashion
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.metrics import roc_auc_score

from jobs.inputs import Batch
from jobs.work import JobSpec, compute, latest_version, open_model
from modelrepo.idx import read_idx
from service.runtime import neighbors

N = 2000


def png_nats(x: np.ndarray) -> np.ndarray:
    """Each [1, H, W] image's PNG size (8-bit, best compression), in nats."""
    out = np.empty(len(x))
    for i, img in enumerate(np.clip(np.rint(x[:, 0] * 255), 0, 255).astype(np.uint8)):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG", optimize=True)
        out[i] = len(buf.getvalue()) * 8 * np.log(2)
    return out


def scores(rt, x: np.ndarray, k: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    spec = JobSpec("score", "", rt.name, rt.manifest.version, None, "", k=k, seed=0)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    parts = [compute(rt, spec, Batch([], x[i:i + 250], [], np.arange(i, i + len(x[i:i + 250]))))
             for i in range(0, len(x), 250)]
    t_score = (time.perf_counter() - t0) / len(x)
    out = {f: np.concatenate([p[f] for p in parts]) for f in ("neg_elbo", "nll_iwae")}
    t0 = time.perf_counter()
    out["complexity"] = out["nll_iwae"] - png_nats(x)
    t_png = (time.perf_counter() - t0) / len(x)
    t0 = time.perf_counter()
    mu, logvar, _ = rt.encode_batch(x)
    ref = rt.reference
    _, d = neighbors.search(mu, logvar, ref["mu"], ref["logvar"], 1, "w2")
    out["latent W2"] = d[:, 0]
    t_w2 = (time.perf_counter() - t0) / len(x)
    costs = {"neg_elbo": t_score, "nll_iwae": t_score, "complexity": t_score + t_png,
             "latent W2": t_w2}
    return out, costs


def histograms(model: str, other: str, s_in: dict, s_out: dict, out: Path) -> None:
    """One panel per score: the in-distribution items' values against the other set's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(15, 3.2))
    for ax, f in zip(axes, ("neg_elbo", "nll_iwae", "complexity", "latent W2"), strict=True):
        lo, hi = np.percentile(np.r_[s_in[f], s_out[f]], [0.5, 99.5])
        bins = np.linspace(lo, hi, 50)
        ax.hist(s_in[f], bins, alpha=0.6, label=f"{model} (in)")
        ax.hist(s_out[f], bins, alpha=0.6, label=f"{other} (out)")
        ax.set_title(f"{model} model: {f}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=72)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repository", default="models")
    p.add_argument("--mnist", default="data/mnist")
    p.add_argument("--fashion", default="data/fashion")
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--images", default="docs/images")
    a = p.parse_args(argv)
    data = {}
    for name, folder in (("mnist", a.mnist), ("fashion", a.fashion)):
        imgs = read_idx(next(Path(folder).glob("t10k-images-idx3-ubyte*")))
        data[name] = (imgs[-N:].astype(np.float32) / 255)[:, None]  # the held-out end
    print(f"AUROC, {N:,} in-distribution vs {N:,} other items, k = {a.k}; cost per item "
          "(2 threads)\n")
    print("| model: in vs out | " + " | ".join(("neg_elbo", "nll_iwae", "complexity",
                                                "latent W2")) + " |")
    print("|---|---|---|---|---|")
    for model, other in (("mnist", "fashion"), ("fashion", "mnist")):
        version = latest_version(a.repository, model)
        spec = JobSpec("score", a.repository, model, version, None, "", threads=2)  # type: ignore[arg-type]
        rt = open_model(spec)
        s_in, costs = scores(rt, data[model], a.k)
        s_out, _ = scores(rt, data[other], a.k)
        cells = []
        for f in ("neg_elbo", "nll_iwae", "complexity", "latent W2"):
            y = np.r_[np.zeros(N), np.ones(N)]
            auc = roc_auc_score(y, np.r_[s_in[f], s_out[f]])
            cells.append(f"{auc:.3f} ({1e3 * costs[f]:.2f} ms)")
        print(f"| {model}/{version}: {model} vs {other} | " + " | ".join(cells) + " |")
        histograms(model, other, s_in, s_out, Path(a.images) / f"ood_{model}.png")


if __name__ == "__main__":
    main()
