"""Graph variants derived from the verified fp32 pair, each measured before it is listed.

- fp16: weights and arithmetic in float16 with float32 inputs and outputs (for GPUs; the CPU
  build runs it too, which is where its parity is measured here).
- int8: onnxruntime dynamic quantization (int8 weights, activations quantized per batch), for
  CPUs.

Each variant's parity is measured against the fp32 graphs in onnxruntime, and its held-out
-ELBO with the same estimator as /score (modelrepo/scoring.py), so the manifest states what
the variant costs in quality.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from modelrepo.manifest import Parity, Variant
from modelrepo.scoring import score

log = logging.getLogger("export")
VARIANT_TOLERANCE = {"fp16": 1e-2, "int8": 0.5}  # max |variant - fp32| of mu, logvar, x
MAX_ELBO_COST = 0.01  # and at most 1 % worse held-out -ELBO: int8's real gate


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _no_preprocessing_advice(record: logging.LogRecord) -> bool:
    """The quantizer advises its shape-inference pre-processing on every call; on the MNIST
    decoder it changed nothing (the same max difference, 0.0573, with and without), so the
    advice is dropped rather than printed at every export."""
    return "pre-processing before quantization" not in record.getMessage()


def make_variant(kind: str, folder: Path) -> None:
    """Write {encoder,decoder}.<kind>.onnx beside the fp32 graphs."""
    for g in ("encoder", "decoder"):
        src, dst = folder / f"{g}.onnx", folder / f"{g}.{kind}.onnx"
        if kind == "fp16":
            from onnxruntime.transformers.float16 import convert_float_to_float16
            from onnxruntime.transformers.onnx_model import OnnxModel

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                half = OnnxModel(convert_float_to_float16(onnx.load(str(src)),
                                                          keep_io_types=True))
            half.topological_sort()  # the converter appends its input casts out of order
            onnx.save(half.model, str(dst))
        elif kind == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            root = logging.getLogger()
            root.addFilter(_no_preprocessing_advice)
            try:
                quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
            finally:
                root.removeFilter(_no_preprocessing_advice)
        else:
            raise ValueError(f"unknown variant {kind!r} (fp16 or int8)")
        onnx.checker.check_model(onnx.load(str(dst)), full_check=True)


def heldout_neg_elbo(folder: Path, suffix: str, x: np.ndarray, likelihood: str) -> float:
    enc = _session(folder / f"encoder{suffix}.onnx")
    dec = _session(folder / f"decoder{suffix}.onnx")
    names = [o.name for o in dec.get_outputs()]
    total = 0.0
    for i in range(0, len(x), 500):
        xb = np.ascontiguousarray(x[i : i + 500], dtype=np.float32)
        mu, logvar = enc.run(["mu", "logvar"], {"x": xb})
        eps = np.random.default_rng(i).standard_normal((1, *mu.shape)).astype(np.float32)
        neg_elbo, _ = score(xb, mu, logvar, eps, likelihood,
                            lambda z: dict(zip(names, dec.run(names, {"z": z}), strict=True)))
        total += float(neg_elbo.sum())
    return total / len(x)


def measure(kind: str, folder: Path, x: np.ndarray, likelihood: str,
            batch_sizes: list[int]) -> tuple[Parity, float]:
    """Max |variant - fp32| of mu, logvar and x, and the variant's held-out -ELBO."""
    ref = {g: _session(folder / f"{g}.onnx") for g in ("encoder", "decoder")}
    var = {g: _session(folder / f"{g}.{kind}.onnx") for g in ("encoder", "decoder")}
    rng = np.random.default_rng(0)
    zdim = ref["encoder"].get_outputs()[0].shape[1]
    diffs = {"encoder": 0.0, "decoder": 0.0}
    for n in batch_sizes:
        feeds = {"encoder": {"x": x[rng.integers(0, len(x), n)].astype(np.float32)},
                 "decoder": {"z": rng.standard_normal((n, zdim)).astype(np.float32)}}
        for g, names in (("encoder", ["mu", "logvar"]), ("decoder", ["x"])):
            # what clients receive; raw logits far from 0 carry large but harmless int8 error
            for a, b in zip(ref[g].run(names, feeds[g]), var[g].run(names, feeds[g]),
                            strict=True):
                diffs[g] = max(diffs[g], float(np.abs(a - b).max()))
    parity = Parity(batch_sizes=batch_sizes, encoder_max_abs_diff=diffs["encoder"],
                    decoder_max_abs_diff=diffs["decoder"], tolerance=VARIANT_TOLERANCE[kind])
    return parity, heldout_neg_elbo(folder, f".{kind}", x, likelihood)


def build_variants(folder: Path, kinds: list[str], x: np.ndarray, likelihood: str,
                   batch_sizes: list[int], graph_entry) -> dict[str, Variant]:
    """Make, check and measure each variant; one that misses its tolerance is not listed."""
    fp32 = heldout_neg_elbo(folder, "", x, likelihood)
    out = {}
    for kind in kinds:
        make_variant(kind, folder)
        parity, elbo = measure(kind, folder, x, likelihood, batch_sizes)
        worst = max(parity.encoder_max_abs_diff, parity.decoder_max_abs_diff)
        cost = (elbo - fp32) / abs(fp32)
        if worst > parity.tolerance or cost > MAX_ELBO_COST:
            log.warning("variant %s not listed: differs by %.3g (limit %.3g), -ELBO %+.2f %% "
                        "(limit %+.0f %%)", kind, worst, parity.tolerance, 100 * cost,
                        100 * MAX_ELBO_COST)
            for g in ("encoder", "decoder"):
                (folder / f"{g}.{kind}.onnx").unlink()
            continue
        graphs = {g: graph_entry(folder / f"{g}.{kind}.onnx",
                                 onnx.load(str(folder / f"{g}.{kind}.onnx")))
                  for g in ("encoder", "decoder")}
        out[kind] = Variant(graphs=graphs, parity=parity, heldout_neg_elbo=elbo,
                            note=f"held-out -ELBO {elbo:.3f} vs fp32 {fp32:.3f} nats "
                                 f"({elbo - fp32:+.3f})")
        log.info("variant %s: max diff %.2e, %s", kind, worst, out[kind].note)
    return out
