"""The manifest: the one contract between export (writes it) and service (validates it).

Versioned by SCHEMA_VERSION. The JSON Schema file beside this module (manifest.schema.json) is
generated from these models (`python -m modelrepo.manifest > modelrepo/manifest.schema.json`)
and a test keeps the two equal. Only numpy/pydantic here: the service imports it without torch.
"""

from __future__ import annotations

import json
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SCHEMA_VERSION = 1
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TensorSpec(_Strict):
    name: str
    dtype: Literal["float32"] = "float32"
    shape: list[int | str]  # "N" marks the dynamic batch axis


class FileEntry(_Strict):
    path: str = Field(description="file name inside the version folder")
    sha256: str
    bytes: int = Field(ge=0)

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v: str) -> str:
        if not _SHA256.match(v):
            raise ValueError("sha256 must be 64 lowercase hex characters")
        return v

    @field_validator("path")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        # A manifest must never point outside its own version folder.
        if not v or "/" in v or "\\" in v or v in (".", ".."):
            raise ValueError(f"file path {v!r} must be a plain file name")
        return v


class GraphEntry(FileEntry):
    opset: int = Field(ge=1)
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


class InputSpec(_Strict):
    shape: list[int] = Field(min_length=3, max_length=3, description="[C, H, W]")
    dtype: Literal["float32"] = "float32"
    range: tuple[float, float] = (0.0, 1.0)
    preprocessing: str = "pixel values scaled to [0, 1]"


class Parity(_Strict):
    batch_sizes: list[int]
    encoder_max_abs_diff: float
    decoder_max_abs_diff: float
    tolerance: float
    # further decoder outputs (Bernoulli logits, Gaussian x_logvar), recorded, not held to
    # `tolerance`: logits of magnitude ~20 sit near float32's resolution
    decoder_aux_max_abs_diff: float | None = None


class ProjectionQuality(_Strict):
    silhouette: float | None = Field(description="silhouette of the 2-D points by label")
    knn5_accuracy: float | None = Field(description="5-NN label accuracy in 2-D, leave-one-out")


class ReferenceInfo(_Strict):
    file: str = Field(description="the npz file listed in `files`")
    items: int = Field(ge=1)
    projection: Literal["pca"] = "pca"
    has_labels: bool
    # additive (schema_version 1 still): absent in manifests written before, read as False
    has_logvar: bool = Field(False, description="the npz holds `logvar` [M, Z] beside `mu`: "
                             "the reference posteriors /neighbors compares with")
    has_images: bool = Field(False, description="the npz holds the items themselves, `x` "
                             "[M, *S] float32: /neighbors answers them")
    projections: list[Literal["pca", "tsne"]] = Field(
        default_factory=lambda: ["pca"], description="2-D maps in the npz: `points` (pca) "
        "and `points_tsne` (t-SNE, computed at export)")
    quality: dict[str, ProjectionQuality] = Field(
        default_factory=dict, description="per projection, how well it separates the labels")


class ScoreInfo(_Strict):
    heldout_items: int = Field(ge=1)
    estimator: str
    quantiles: list[float] = Field(min_length=2, description="held-out -ELBO at 0, 1, ..., 100 %")


class FeatureNetInfo(_Strict):
    """The project's own classifier (training/features.py) exported beside the VAE: the feature
    space of the model's quality figures (feature-FID) and of its perceptual loss, if any."""

    graph: GraphEntry = Field(description="x [N, C, H, W] -> embedding [N, E], logits [N, K]")
    embedding_dim: int = Field(ge=1)
    classes: int = Field(ge=2)
    heldout_accuracy: float | None = Field(default=None, ge=0, le=1)


class Variant(_Strict):
    """A graph pair derived from the fp32 one (fp16 for GPUs, int8 dynamic quantization)."""

    graphs: dict[Literal["encoder", "decoder"], GraphEntry]
    parity: Parity
    heldout_neg_elbo: float = Field(description="held-out -ELBO computed with this pair")
    note: str = ""


class Manifest(_Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    version: int = Field(ge=1)
    created: str = Field(description="ISO 8601 UTC time of export")
    input: InputSpec
    latent_dim: int = Field(ge=1)
    likelihood: Literal["bernoulli", "gaussian"]
    graphs: dict[Literal["encoder", "decoder"], GraphEntry]
    files: list[FileEntry] = Field(default_factory=list, description="further files, e.g. data")
    training: dict = Field(default_factory=dict, description="data description and metrics")
    parity: Parity
    reference: ReferenceInfo | None = None
    score: ScoreInfo | None = None
    variants: dict[str, Variant] = Field(default_factory=dict)
    feature_net: FeatureNetInfo | None = None
    software: dict[str, str] = Field(default_factory=dict)

    @field_validator("graphs")
    @classmethod
    def _both_graphs(cls, v: dict) -> dict:
        missing = {"encoder", "decoder"} - set(v)
        if missing:
            raise ValueError(f"graphs must include {sorted(missing)}")
        return v

    def all_files(self) -> list[FileEntry]:
        variant_graphs = [g for v in self.variants.values() for g in v.graphs.values()]
        features = [self.feature_net.graph] if self.feature_net else []
        return [self.graphs["encoder"], self.graphs["decoder"], *variant_graphs, *features,
                *self.files]

    def graph_pair(self, variant: str) -> dict[str, GraphEntry]:
        if variant == "fp32":
            return self.graphs
        if variant not in self.variants:
            raise KeyError(f"variant {variant!r} not in the manifest (has fp32"
                           + "".join(f", {v}" for v in self.variants) + ")")
        return self.variants[variant].graphs


def json_schema() -> dict:
    schema = Manifest.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"vae-serving/manifest/v{SCHEMA_VERSION}"
    return schema


if __name__ == "__main__":
    print(json.dumps(json_schema(), indent=2))
