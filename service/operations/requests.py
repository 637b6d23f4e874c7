"""The requests of the contract's operations (docs/API.md): each field with its default,
its limits and what it means, said once. The OpenAPI document, the JSON door's validation and
the V2 models' all come from these; limits that depend on settings (VAE_MAX_*) are checked by
the operations themselves (service/operations/api.py)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.errors import BadInput

# z = T * eps must stay finite and meaningful; eps beyond +-6 is rare, so this is ample.
MAX_TEMPERATURE = 100.0
IMAGES = {"description": "images [N, *S], [N, prod(S)] or (C = 1) [N, H, W] as a JSON array, "
                         "or {\"npy\": base64 .npy}, or {\"png\": [base64 PNG, ...]}"}
LATENTS = {"description": "latent codes [N, Z] as a JSON array or {\"npy\": base64 .npy}"}

Version = Annotated[int | None, Field(ge=1, strict=True,
                                      description="model version; default the highest")]
ModelName = Annotated[str | None, Field(strict=True, max_length=63,
                                        description="served model name; default the "
                                                    "service's default model")]
Seed = Annotated[int | None, Field(ge=0, strict=True,
                                   description="seed for eps; omit for fresh draws")]
OutputFormat = Annotated[Literal["json", "npy", "png"],
                         Field(description="encoding of image outputs")]


class Request(BaseModel):
    """A request: unknown fields are refused by name (a typo such as "sampels" must not pass)."""

    model_config = ConfigDict(extra="forbid")
    model: ModelName = None
    version: Version = None


class Encode(Request):
    """q(z|x) = N(mu, sigma^2) of each image; with samples > 0 also z = mu + sigma * eps."""
    inputs: Any = Field(json_schema_extra=IMAGES)
    samples: int = Field(0, ge=0, strict=True, description="z samples per item")
    seed: Seed = None


class Decode(Request):
    """The decoder's mean image of each latent code."""
    z: Any = Field(json_schema_extra=LATENTS)
    output_format: OutputFormat = "json"


class Sample(Request):
    """n draws, decoded: from the prior N(0, T^2 I), or from the data: the mixture of the
    reference set's posteriors (prior "aggregate"; labels: only those classes) or of given
    images' (like), each component's sigma scaled by T."""
    n: int = Field(1, ge=1, strict=True, description="how many")
    temperature: float = Field(1.0, gt=0, le=MAX_TEMPERATURE, allow_inf_nan=False, strict=True,
                               description="T: z ~ N(0, T^2 I), or mu_i + T * sigma_i * eps "
                                           "for the aggregate")  # 3.1: exclusiveMinimum 0
    seed: Seed = None
    prior: Literal["standard", "aggregate"] = Field(
        "standard", description="standard: N(0, I); aggregate: the mixture of posteriors "
                                "(of the reference set, or of `like`)")
    labels: list[Annotated[int, Field(strict=True)]] | None = Field(
        None, min_length=1, max_length=1000, description="aggregate: only reference items "
                                                         "with these labels")
    like: Any = Field(None, json_schema_extra={
        "description": "images [N, *S], [N, prod(S)] or (C = 1) [N, H, W], or {\"npy\"} or "
                       "{\"png\"}: aggregate over these items' posteriors instead of the "
                       "reference set"})
    output_format: OutputFormat = "json"


class Interpolate(Request):
    """Paths between pairs: images (their mu) or latent codes; lerp or slerp."""
    start: Any = Field(None, json_schema_extra=IMAGES)
    end: Any = Field(None, json_schema_extra=IMAGES)
    start_z: Any = Field(None, json_schema_extra=LATENTS)
    end_z: Any = Field(None, json_schema_extra=LATENTS)
    steps: int = Field(8, ge=2, strict=True, description="points per path, endpoints included")
    method: Literal["lerp", "slerp"] = "lerp"
    output_format: OutputFormat = "json"


class Reconstruct(Request):
    """Decode mu of each image, or one z drawn from q(z|x) when sample is true."""
    inputs: Any = Field(json_schema_extra=IMAGES)
    sample: bool = Field(False, strict=True, description="decode a draw instead of mu")
    seed: Seed = None
    output_format: OutputFormat = "json"


class Score(Request):
    """-ELBO and the importance-weighted NLL bound (nats per item), and the held-out
    percentile of -ELBO; with fpr, outlier flags at that false-alarm rate."""
    inputs: Any = Field(json_schema_extra=IMAGES)
    k: int = Field(1, ge=1, strict=True, description="draws of z for nll_iwae (and for "
                                                      "neg_elbo when estimator is sampled)")
    seed: Seed = None
    estimator: Literal["sigma_points", "sampled"] = Field(
        "sigma_points", description="neg_elbo's: sigma_points (deterministic: the same item, "
        "the same score) or sampled (the mean over the k draws)")
    fpr: float | None = Field(None, gt=0, lt=1, allow_inf_nan=False, description=(
        "false-positive rate: adds threshold (the 1 - fpr quantile of the reference items' "
        "neg_elbo, same estimator) and is_outlier (neg_elbo > threshold)"))
    flag_by: Literal["neg_elbo", "latent_w2"] = Field(
        "neg_elbo", description="with fpr, the score flagged: neg_elbo, or latent_w2 (the "
        "distance to the nearest reference posterior: it detects other data sets, where "
        "likelihood fails; docs/MODEL_QUALITY.md)")


class Compare(Request):
    """How much the posteriors of two images overlap, per pair (a[i], b[i]): the
    Bhattacharyya coefficient, both KL divergences and the 2-Wasserstein distance between
    q(z|a) and q(z|b), summed over the latent dimensions."""
    a: Any = Field(json_schema_extra=IMAGES)
    b: Any = Field(json_schema_extra=IMAGES)


class Neighbors(Request):
    """The nearest items of the model's reference set to each image's posterior, by the
    2-Wasserstein distance between the distributions (default: it finds same-class items best,
    docs/MODEL_QUALITY.md), their overlap, KL(q_query || q_reference), or the distance between
    means; with their labels and images."""
    inputs: Any = Field(json_schema_extra=IMAGES)
    k: int = Field(5, ge=1, le=100, strict=True, description="neighbours per item")
    measure: Literal["overlap", "kl", "w2", "euclidean"] = Field(
        "w2", description="w2, kl, euclidean: smaller is nearer; overlap: Bhattacharyya "
        "coefficient (ranked by its distance)")
    output_format: OutputFormat = "json"


class LatentMap(Request):
    """The reference set's mu projected to 2-D, with labels and how well the map separates
    them (silhouette, 5-NN accuracy in 2-D)."""
    projection: Literal["pca", "tsne"] = Field(
        "pca", description="pca: linear and invertible (a point maps back to a z); tsne: "
        "t-SNE computed at export, clusters shown better, not invertible")
    with_mu: bool = Field(False, strict=True, description="also answer `mu` [M, Z], the "
                          "reference items' means (what a click on a t-SNE map is decoded from)")


class ModelInfo(Request):
    """The served model: identity, shapes, graphs, training metrics."""


def validation_error(exc: ValidationError, known: Iterable[str] = ()) -> BadInput:
    """Each invalid field by name and what is wrong with it; an unknown field gets the closest
    of the `known` ones suggested (a typo such as `input` for `inputs`)."""
    details = exc.errors(include_url=False, include_context=False, include_input=False)
    for d in details:  # a client's field names are quoted, cut to a sane length
        d["loc"] = tuple(p[:80] + "…" if isinstance(p, str) and len(p) > 80 else p
                         for p in d["loc"])
    known = list(known)
    for d in details:
        if d["type"] == "extra_forbidden" and d["loc"]:
            close = difflib.get_close_matches(str(d["loc"][-1]), known, n=1, cutoff=0.6)
            d["msg"] += f"; did you mean {close[0]!r}?" if close else \
                f" (fields: {', '.join(known)})" if known else ""
    parts = [f"{'.'.join(str(p) for p in d['loc']) or 'body'}: {d['msg']}" for d in details]
    err = BadInput("; ".join(parts))
    err.detail = [{k: d[k] for k in ("loc", "msg", "type") if k in d} for d in details]
    return err
