"""Sampling from the data (the contract's v1.2 `/sample` with prior "aggregate"): the mixture
of posteriors q(z) = (1/M) sum_i N(mu_i, sigma_i^2) of the version's reference set (only the
items with `labels`, when given) or of the `like` images. The regions the standard prior puts
mass on but no posterior covers (its "holes") are where off-manifold samples come from; the
aggregate has none by construction."""

from __future__ import annotations

from typing import Any

import numpy as np

from service.errors import BadInput, VersionNotFound
from service.runtime import latent


async def components(ops: Any, rt: Any, r: Any) -> tuple[np.ndarray, np.ndarray]:
    """-> (mu [M, Z], sigma [M, Z]) of the mixture a Sample request asks for."""
    if r.like is not None:
        if r.labels is not None:
            raise BadInput("labels: not with like (like's items carry no labels)")
        x = ops.images(rt, r.like, "like")
        mu, _, sigma = await rt.aencode(x)
        return mu, sigma
    ref, v = rt.reference, rt.manifest.version
    if ref is None or "logvar" not in ref:
        raise VersionNotFound(f"prior: version {v} has no reference posteriors to sample "
                              "from (exported without a reference set, or before log-variances "
                              "were stored); send `like` images, or use prior \"standard\"")
    mu, logvar = ref["mu"], ref["logvar"]
    if r.labels is not None:
        if "labels" not in ref:
            raise BadInput(f"labels: version {v}'s reference set has no labels")
        keep = np.isin(ref["labels"], r.labels)
        if not keep.any():
            present = sorted(set(ref["labels"].tolist()))
            raise BadInput(f"labels: {r.labels[:20]} match no reference item (its labels: "
                           f"{present[:50]})")
        mu, logvar = mu[keep], logvar[keep]
    return mu, latent.sigma_of(logvar)


async def sample(ops: Any, rt: Any, r: Any) -> dict[str, np.ndarray]:
    """z and their images; `components` [n]: each draw's item in the mixture's order."""
    if r.prior == "standard":
        if r.labels is not None or r.like is not None:
            raise BadInput("labels, like: only with prior \"aggregate\" (the standard prior "
                           "has no items to choose from)")
        z = np.float32(r.temperature) * latent.draw_eps(r.seed, (r.n, rt.latent_dim))
        return {"z": z, "outputs": await rt.adecode(z)}
    mu, sigma = await components(ops, rt, r)
    z, which = latent.sample_mixture(mu, sigma, r.n, r.temperature, r.seed)
    return {"z": z, "outputs": await rt.adecode(z), "components": which}
