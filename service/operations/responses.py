"""What each operation answers, typed for the API document (/docs.json) and the clients
generated from it. The answers themselves are written by the doors from the operations'
arrays (service/doors/http_json.py, without building these models: the hot path stays free of
a second validation); tests/test_openapi.py checks every real answer, in every output_format,
against the schema these give, so the two cannot drift apart.

Shapes: N items, Z latent units, S = [C, H, W] the model's image shape, K neighbours."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Floats1 = list[float]
Floats2 = list[Floats1]
Floats3 = list[Floats2]
Floats4 = list[Floats3]
Floats5 = list[Floats4]


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NpyTensor(_Answer):
    """An array as a .npy file (float32, little-endian, no pickle), base64 (output_format npy)."""
    npy: str = Field(description="base64 of the .npy bytes; the array has the shape a JSON "
                                 "answer would have")


class PngImages(_Answer):
    """Images as PNG files, one per image, item-major (output_format png)."""
    png: list[str] = Field(description="base64 PNG per image (8-bit, grey or RGB)")


Images4 = Floats4 | NpyTensor | PngImages  # [N, C, H, W] in json
Images5 = Floats5 | NpyTensor | PngImages  # [N, M, C, H, W] in json


class EncodeResponse(_Answer):
    """The posterior q(z|x) = N(mu, sigma^2) of each item."""
    mu: Floats2 = Field(description="[N, Z] posterior means")
    sigma: Floats2 = Field(description="[N, Z] posterior standard deviations")
    logvar: Floats2 = Field(description="[N, Z] log sigma^2")
    z: Floats3 | None = Field(None, description="[N, samples, Z] z = mu + sigma * eps; "
                                                "present when samples > 0")


class DecodeResponse(_Answer):
    """The decoder's mean image of each latent code."""
    outputs: Images4 = Field(description="[N, C, H, W] in the model's input range")


class SampleResponse(_Answer):
    """Draws from the prior (or the aggregate posterior) and their images."""
    z: Floats2 = Field(description="[n, Z] the latent codes drawn")
    outputs: Images4 = Field(description="[n, C, H, W] their decoded images")
    components: list[int] | None = Field(None, description="[n] prior aggregate: each draw's "
                                                           "item of the mixture (reference or "
                                                           "like order); absent otherwise")


class InterpolateResponse(_Answer):
    """Paths through the latent space and the images along them."""
    z: Floats3 = Field(description="[N, steps, Z] the path of each pair")
    outputs: Images5 = Field(description="[N, steps, C, H, W] (png: N * steps images)")


class ReconstructResponse(_Answer):
    """Each item encoded and decoded."""
    outputs: Images4 = Field(description="[N, C, H, W]")


class ScoreResponse(_Answer):
    """Per-item scores in nats (higher: less likely under the model)."""
    neg_elbo: Floats1 = Field(description="[N] -ELBO from k posterior samples")
    nll_iwae: Floats1 = Field(description="[N] importance-weighted NLL estimate (k samples)")
    percentile: Floats1 | None = Field(description="[N] where each neg_elbo falls among the "
                                                   "held-out set's, 0-100; null without a "
                                                   "reference set")
    latent_w2: Floats1 | None = Field(None, description="[N] 2-Wasserstein distance from the "
                                                       "item's posterior to the nearest "
                                                       "reference one; absent without "
                                                       "reference posteriors")
    threshold: float | None = Field(None, description="with fpr: the value of the flagged "
                                                      "score (flag_by) above which an item is "
                                                      "flagged")
    is_outlier: list[bool] | None = Field(None, description="with fpr: [N] score > "
                                                            "threshold")


class CompareResponse(_Answer):
    """Per pair (a[i], b[i]), measures between the two posteriors."""
    overlap: Floats1 = Field(description="[N] Bhattacharyya coefficient, 0-1")
    bhattacharyya: Floats1 = Field(description="[N] Bhattacharyya distance, >= 0")
    kl_ab: Floats1 = Field(description="[N] KL(q_a || q_b), >= 0")
    kl_ba: Floats1 = Field(description="[N] KL(q_b || q_a), >= 0")
    w2: Floats1 = Field(description="[N] 2-Wasserstein distance, >= 0")


class NeighborsResponse(_Answer):
    """The K reference items nearest to each item by the measure."""
    indices: list[list[int]] = Field(description="[N, K] reference item indices, best first")
    scores: Floats2 = Field(description="[N, K] the measure's value per neighbour")
    labels: list[list[int]] | None = Field(description="[N, K] their labels; null when the "
                                                       "reference set has none")
    outputs: Images5 = Field(description="[N, K, C, H, W] the neighbours' images")
    measure: Literal["overlap", "kl", "w2", "euclidean"] = Field(description="the measure used")


class ProjectionQualityAnswer(_Answer):
    silhouette: float | None = Field(description="silhouette of the 2-D points by label")
    knn5_accuracy: float | None = Field(description="5-NN label accuracy in 2-D")


class LatentMapResponse(_Answer):
    """The reference set's posterior means projected to 2-D."""
    points: Floats2 = Field(description="[M, 2] one point per reference item")
    labels: list[int] | None = Field(description="[M] their labels, or null")
    projection: Literal["pca", "tsne"] = Field(description="the projection used")
    projection_mean: Floats1 | None = Field(description="[Z] pca: the mean subtracted; null "
                                                        "for tsne")
    projection_components: Floats2 | None = Field(description="[2, Z] pca: the axes; null for "
                                                              "tsne")
    quality: ProjectionQualityAnswer | None = Field(description="how well the 2-D map keeps "
                                                                "the labels apart")
    mu: Floats2 | None = Field(description="[M, Z] the reference means, with with_mu")


class InputInfo(_Answer):
    shape: list[int] = Field(description="S = [C, H, W]")
    dtype: str
    range: list[float] = Field(description="[low, high] of accepted values")


class GraphInfo(_Answer):
    sha256: str
    opset: int


class ServedModel(_Answer):
    name: str
    versions: list[int]
    default: bool = Field(description="answers requests that name no model")


class ModelResponse(_Answer):
    """The served model's metadata."""
    name: str
    version: int
    versions: list[int] = Field(description="every loaded version of this model")
    input: InputInfo
    latent_dim: int = Field(description="Z")
    likelihood: str = Field(description="bernoulli or gaussian")
    graphs: dict[str, GraphInfo] = Field(description="encoder, decoder (and features)")
    provider: str = Field(description="the onnxruntime execution provider")
    variant: str = Field(description="fp32, fp16 or int8")
    variants: list[str]
    training: dict = Field(description="the training data and metrics the manifest records")
    parity: dict = Field(description="export-time parity of the graphs against PyTorch")
    created: str = Field(description="when the version was exported (ISO 8601)")
    models: list[ServedModel] = Field(description="every served model")


class ErrorResponse(BaseModel):
    """Every error answer of the JSON API (4xx, 5xx)."""
    error: str = Field(description="what is wrong, naming the field and the limit")
    request_id: str | None = Field(None, description="the request's ID (X-Request-ID), also "
                                                     "in the access log")
    detail: list[dict] | None = Field(None, description="one entry per invalid field")


RESPONSES: dict[str, type[BaseModel]] = {
    "encode": EncodeResponse, "decode": DecodeResponse, "sample": SampleResponse,
    "interpolate": InterpolateResponse, "reconstruct": ReconstructResponse,
    "score": ScoreResponse, "compare": CompareResponse, "neighbors": NeighborsResponse,
    "latent_map": LatentMapResponse, "model": ModelResponse}


# --- KServe V2 REST answers (the Open Inference Protocol's JSON) ---------------------------

class V2OutputTensor(_Answer):
    name: str
    datatype: str = Field(description="FP32, INT64, ...")
    shape: list[int]
    data: list[float] | list[int] | None = Field(None, description="row-major values (absent "
                                                                   "when sent as binary)")
    parameters: dict[str, int] | None = Field(None, description="binary_data_size: bytes of "
                                                                "this tensor after the header")


class V2InferResponse(_Answer):
    """One inference: the JSON header (binary tensors follow it when asked for)."""
    model_name: str
    model_version: str
    id: str | None = Field(None, description="the request's id, echoed")
    outputs: list[V2OutputTensor]


class V2TensorSpec(_Answer):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1: any size")
    parameters: dict[str, bool] | None = Field(None, description="optional: true for an input "
                                                                 "that may be left out")


class V2ModelMetadata(_Answer):
    """A V2 model's inputs and outputs."""
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorSpec]
    outputs: list[V2TensorSpec]


class V2ServerMetadata(_Answer):
    name: str
    version: str
    extensions: list[str]


class V2IndexEntry(_Answer):
    name: str = Field(description="V2 model name (encoder, or m.encoder for model m)")
    version: str
    state: Literal["READY", "LOADING", "UNAVAILABLE"]
    reason: str


class V2Empty(_Answer):
    """Nothing to say: the call was done."""
