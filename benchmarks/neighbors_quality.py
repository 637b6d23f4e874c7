"""`make neighbors-quality`: how often /neighbors finds items of the same class, per measure and
model (docs/MODEL_QUALITY.md): leave-one-out 5-NN label agreement over each version's reference
set (the held-out items stored at export), with service/runtime/neighbors.py's own distances;
and what the posteriors look like (active units, sigma of active and inactive units).

    python -m benchmarks.neighbors_quality --repository models --models digits,mnist
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from modelrepo.repository import list_versions
from service.runtime import neighbors


def agreement(mu: np.ndarray, logvar: np.ndarray, labels: np.ndarray, measure: str,
              k: int = 5) -> tuple[float, float]:
    """-> (share of the k nearest that have the item's label, share of items whose k nearest
    vote for its label: the 5-NN accuracy of the other tables)."""
    d = neighbors.distances(mu, logvar, mu, logvar, measure)
    np.fill_diagonal(d, np.inf)  # leave one out: an item is not its own neighbour
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    near = labels[idx]
    votes = np.array([np.bincount(row, minlength=labels.max() + 1).argmax() for row in near])
    return float((near == labels[:, None]).mean()), float((votes == labels).mean())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repository", default="models")
    p.add_argument("--models", default="digits,mnist")
    a = p.parse_args(argv)
    print("| model | items | active units | sigma active / inactive | "
          + " | ".join(neighbors.MEASURES) + " |")
    print("|---|---|---|---|" + "---|" * len(neighbors.MEASURES))
    for name in a.models.split(","):
        versions = list_versions(a.repository, name)
        if not versions:
            print(f"| {name} | absent | | | " + "| " * len(neighbors.MEASURES))
            continue
        ref = np.load(Path(a.repository) / name / str(max(versions)) / "reference.npz")
        mu, logvar, labels = ref["mu"], ref["logvar"], ref["labels"]
        sigma, active = np.exp(0.5 * logvar), mu.var(axis=0) > 0.01
        cells = [" / ".join(f"{100 * v:.1f} %" for v in agreement(mu, logvar, labels, m))
                 for m in neighbors.MEASURES]
        print(f"| {name}/{max(versions)} | {len(mu):,} | {int(active.sum())} of {mu.shape[1]} | "
              f"{sigma[:, active].mean():.2f} / "
              f"{sigma[:, ~active].mean() if (~active).any() else float('nan'):.2f} | "
              + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
