"""`make sampling-quality`: what sampling from the data buys (docs/MODEL_QUALITY.md), with the
models as served and the service's own sampling recipe (service.runtime.latent):

- feature-FID (the version's features.onnx embedding) of 2,000 samples from the standard prior
  N(0, I), from the aggregate posterior (`prior: "aggregate"`, the reference set's mixture) and
  from a fitted sampler (a 10-component Gaussian mixture on the reference mu, Pythae-style,
  not served), against 2,000 real items the reference set does not contain; the same distance
  for 2,000 real items is the floor at this sample size;
- per class c, how often 200 samples with `labels: [c]` are recognised as c by the feature
  network (and by 5-NN on the reference mu of the samples' own encodings), beside the feature
  network's accuracy on real items of c;
- pictures: docs/images/sampling_<model>.png.

    python -m benchmarks.sampling_quality --mnist data/mnist --fashion data/fashion
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort

from jobs.work import JobSpec, latest_version, open_model
from service.runtime import latent, neighbors
from training.data import load_mnist_data
from training.features import frechet_distance

N, PER_CLASS, SEED = 2000, 200, 0


_SESSIONS: dict[str, ort.InferenceSession] = {}


def features(rt, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(embedding [N, E], predicted class [N]) from the version's feature network."""
    sess = _SESSIONS[rt.name]
    emb, logits = zip(*(sess.run(["embedding", "logits"], {"x": x[i:i + 500]})
                        for i in range(0, len(x), 500)), strict=True)
    return np.concatenate(emb).astype(np.float64), np.concatenate(logits).argmax(1)


def decode(rt, z: np.ndarray) -> np.ndarray:
    return np.concatenate([rt.run_decoder(z[i:i + 500])[0] for i in range(0, len(z), 500)])


def real_items(model: str, folder: str) -> tuple[np.ndarray, ...]:
    """(reference images, other real images, their labels, a second disjoint set of other real
    images for the floor): the reference set is the first
    2,000 held-out items (export.reference); the others are held-out items after them (Fashion:
    60,000 training files present) or training items (MNIST: 10,000 test files only)."""
    ds = load_mnist_data(folder, name=model)
    held = ds.heldout_idx
    ref = held[:N]
    # MNIST's test file is ordered (its first 5,000 digits are the cleaner writers'): a seeded
    # random draw keeps the comparison set from being one kind of writer
    pool = held[N:] if len(held) >= 2 * N else ds.train_idx
    pick = np.random.default_rng(SEED).choice(pool, 2 * N, replace=False)
    other, second = np.sort(pick[:N]), np.sort(pick[N:])
    return ds.x[ref], ds.x[other], ds.labels[other], ds.x[second]


def samplers(rt) -> dict[str, np.ndarray]:
    ref = rt.reference
    mu, sigma = ref["mu"], latent.sigma_of(ref["logvar"])
    from sklearn.mixture import GaussianMixture

    gmm = GaussianMixture(10, covariance_type="full", random_state=SEED, reg_covar=1e-4).fit(mu)
    with warnings.catch_warnings():  # inactive units: near-singular covariances, harmless
        warnings.simplefilter("ignore", RuntimeWarning)
        z_gmm = gmm.sample(N)[0].astype(np.float32)
    return {"standard N(0, I)": latent.draw_eps(SEED, (N, rt.latent_dim)),
            "aggregate (served)": latent.sample_mixture(mu, sigma, N, 1.0, SEED)[0],
            "GMM-10 on mu (fitted, not served)": z_gmm}


def per_class(rt, emb_other_cls: np.ndarray, labels_other: np.ndarray) -> list[str]:
    ref = rt.reference
    mu, sigma = ref["mu"], latent.sigma_of(ref["logvar"])
    rows = []
    for c in sorted(set(ref["labels"].tolist())):
        keep = ref["labels"] == c
        z, _ = latent.sample_mixture(mu[keep], sigma[keep], PER_CLASS, 1.0, SEED + c)
        x = decode(rt, z)
        _, cls = features(rt, x)
        s_mu, s_logvar, _ = rt.encode_batch(x)
        idx, _ = neighbors.search(s_mu, s_logvar, mu, ref["logvar"], 5, "euclidean")
        votes = ref["labels"][idx]
        knn = np.array([np.bincount(v, minlength=c + 1).argmax() for v in votes])
        real = emb_other_cls[labels_other == c]
        rows.append(f"| {c} | {(cls == c).mean():.1%} | {(knn == c).mean():.1%} | "
                    f"{(real == c).mean():.1%} |")
    return rows


def picture(rt, model: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = rt.reference
    mu, sigma = ref["mu"], latent.sigma_of(ref["logvar"])
    classes = sorted(set(ref["labels"].tolist()))

    def grid(x: np.ndarray, cols: int) -> np.ndarray:
        rows = len(x) // cols
        h, w = x.shape[-2:]
        return x[:rows * cols, 0].reshape(rows, cols, h, w).transpose(0, 2, 1, 3).reshape(
            rows * h, cols * w)

    std = decode(rt, latent.draw_eps(SEED + 1, (100, rt.latent_dim)))
    agg = decode(rt, latent.sample_mixture(mu, sigma, 100, 1.0, SEED + 1)[0])
    lab = np.concatenate([decode(rt, latent.sample_mixture(
        mu[ref["labels"] == c], sigma[ref["labels"] == c], 10, 1.0, SEED + c)[0])
        for c in classes])
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6))
    for ax, img, title in zip(axes, (grid(std, 10), grid(agg, 10), grid(lab, 10)),
                              ("prior standard", "prior aggregate", "aggregate, labels [c] "
                               "(row c)"), strict=True):
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{model}: {title}")
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repository", default="models")
    p.add_argument("--mnist", default="data/mnist")
    p.add_argument("--fashion", default="data/fashion")
    p.add_argument("--images", default="docs/images")
    a = p.parse_args(argv)
    for model, folder in (("mnist", a.mnist), ("fashion", a.fashion)):
        if not Path(folder).is_dir():
            print(f"{model}: skipped, no data at {folder} (make data-{model})")
            continue
        version = latest_version(a.repository, model)
        rt = open_model(JobSpec("score", a.repository, model, version, None, "", threads=2))  # type: ignore[arg-type]
        graph = Path(a.repository) / model / str(version) / rt.manifest.feature_net.graph.path
        _SESSIONS[model] = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
        x_ref, x_other, y_other, x_second = real_items(model, folder)
        emb_other, cls_other = features(rt, x_other)
        print(f"\n{model}/{version}: feature-FID against {N:,} real items outside the "
              f"reference set ({N:,} samples each)\n")
        emb_ref = features(rt, x_ref)[0]
        print("| samples from | vs other real items | vs the reference set's items |")
        print("|---|---|---|")
        print(f"| real items (the floor at this size) | "
              f"{frechet_distance(emb_other, features(rt, x_second)[0]):.1f} | "
              f"{frechet_distance(emb_other, emb_ref):.1f} |")
        for name, z in samplers(rt).items():
            emb = features(rt, decode(rt, z))[0]
            print(f"| {name} | {frechet_distance(emb_other, emb):.1f} | "
                  f"{frechet_distance(emb_ref, emb):.1f} |")
        print(f"\n{model}/{version}: {PER_CLASS} samples with labels [c], recognised as c\n")
        print("| c | feature network | 5-NN on reference mu | real items of c (feature network) |")
        print("|---|---|---|---|")
        print("\n".join(per_class(rt, cls_other, y_other)))
        out = Path(a.images) / f"sampling_{model}.png"
        picture(rt, model, out)
        print(f"\n{out}")


if __name__ == "__main__":
    main()
