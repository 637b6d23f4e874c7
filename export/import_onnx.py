"""Import a VAE that already exists as two ONNX files (another toolchain's export):

    python -m export.import_onnx --encoder enc.onnx --decoder dec.onnx --input-shape 1,28,28 \
        --likelihood bernoulli --decoder-output probs --repository models --name theirs

Each graph is checked (onnx.checker, no random operators, ranks), wrapped to the service's
names and shapes with a few standard nodes (x [N, C, H, W] -> the graph's own input, flattened
when it takes [N, D]; outputs reshaped to [N, C, H, W]; Bernoulli logits derived from
probabilities, or probabilities from logits), compared in onnxruntime against onnx's reference
evaluator at batch 1 and 7 (<= 1e-4), and published with a manifest. A graph whose batch axis
is fixed (e.g. exported for batch 1) is refused: the service batches requests together, and
splitting every batch into single items would hide a large cost. There is no reference set:
/latent_map and /neighbors answer 404, /score's percentile is null, no fp16/int8 variants.
"""

from __future__ import annotations

import argparse
import math
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnx.compose
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from export.onnx_export import check_graph, decoder_outputs, graph_entry, write_manifest
from modelrepo.cli import Parser
from modelrepo.manifest import InputSpec, Parity
from modelrepo.repository import model_name_arg, next_version, publish, staging_dir

TOLERANCE = 1e-4
BATCHES = [1, 7]
P_MAX = float(np.float32(1.0 - 2.0**-24))
TINY = float(np.finfo(np.float32).tiny)
INNER = "inner/"  # prefix of every name of an imported graph


def _dims(value: onnx.ValueInfoProto) -> list:
    return [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?")
            for d in value.type.tensor_type.shape.dim]


def _load(path: str, role: str) -> onnx.ModelProto:
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    if len(model.graph.input) != 1:
        raise ValueError(f"{role} {path}: one input expected, found "
                         f"{[i.name for i in model.graph.input]}")
    batch = _dims(model.graph.input[0])[:1]
    if batch and isinstance(batch[0], int):
        raise ValueError(f"{role} {path}: the batch axis is fixed at {batch[0]}; export it with "
                         "a dynamic one, e.g. torch.onnx.export(..., dynamic_axes={'x': "
                         "{0: 'N'}}), so the service can batch requests")
    return model


def _const(name: str, values: list, dtype: int = TensorProto.INT64) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, dtype=helper.tensor_dtype_to_np_dtype(dtype)),
                                   name)


def wrap_encoder(model: onnx.ModelProto, shape: list[int], outputs: list[str]) -> onnx.ModelProto:
    """x [N, *S] -> the graph (flattened first when it takes rank 2) -> mu, logvar [N, Z]."""
    found = [o.name for o in model.graph.output]
    missing = [o for o in outputs if o not in found]
    if len(outputs) != 2 or missing:
        raise ValueError(f"encoder: outputs {outputs} not all in the graph's {found} "
                         "(--encoder-outputs names mu and logvar, in that order)")
    model = onnx.compose.add_prefix(model, INNER)  # its names cannot clash with ours
    outputs = [INNER + o for o in outputs]
    g = model.graph
    inner_in = g.input[0]
    rank = len(_dims(inner_in))
    nodes = [helper.make_node("Flatten", ["x"], [inner_in.name], axis=1) if rank == 2 else
             helper.make_node("Identity", ["x"], [inner_in.name])]
    nodes += [*g.node, helper.make_node("Identity", [outputs[0]], ["mu"]),
              helper.make_node("Identity", [outputs[1]], ["logvar"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *shape])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", "Z"])
            for n in ("mu", "logvar")]
    return _rebuild(model, nodes, [x], outs, [])


def wrap_decoder(model: onnx.ModelProto, shape: list[int], likelihood: str, output: str,
                 obs_sigma: float | None) -> onnx.ModelProto:
    """z [N, Z] -> x [N, *S] and Bernoulli `logits` (or Gaussian `x_logvar`)."""
    model = onnx.compose.add_prefix(model, INNER)
    g = model.graph
    raw = g.output[0].name
    inits = [_const("vae_shape", [-1, *shape])]
    nodes = [helper.make_node("Identity", ["z"], [g.input[0].name]), *g.node,
             helper.make_node("Reshape", [raw, "vae_shape"], ["vae_raw"])]
    if likelihood == "gaussian":
        if obs_sigma is None:
            raise ValueError("--obs-sigma: a gaussian decoder graph needs the observation sigma")
        inits.append(_const("vae_logvar", [2 * math.log(obs_sigma)], TensorProto.FLOAT))
        nodes += [helper.make_node("Identity", ["vae_raw"], ["x"]),
                  helper.make_node("Mul", ["vae_raw", "vae_zero"], ["vae_zeros"]),
                  helper.make_node("Add", ["vae_zeros", "vae_logvar"], ["x_logvar"])]
        inits.append(_const("vae_zero", [0.0], TensorProto.FLOAT))
    elif output == "logits":
        nodes += [helper.make_node("Sigmoid", ["vae_raw"], ["x"]),
                  helper.make_node("Identity", ["vae_raw"], ["logits"])]
    else:  # probabilities: logits = log p - log(1 - p), p kept inside (0, 1)
        inits += [_const("vae_lo", TINY, TensorProto.FLOAT), _const("vae_hi", P_MAX,
                                                                    TensorProto.FLOAT),
                  _const("vae_one", [1.0], TensorProto.FLOAT)]
        nodes += [helper.make_node("Identity", ["vae_raw"], ["x"]),
                  helper.make_node("Clip", ["vae_raw", "vae_lo", "vae_hi"], ["vae_p"]),
                  helper.make_node("Log", ["vae_p"], ["vae_logp"]),
                  helper.make_node("Sub", ["vae_one", "vae_p"], ["vae_q"]),
                  helper.make_node("Log", ["vae_q"], ["vae_logq"]),
                  helper.make_node("Sub", ["vae_logp", "vae_logq"], ["logits"])]
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", _dims(g.input[0])[-1]])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", *shape])
            for n in decoder_outputs(likelihood)]
    return _rebuild(model, nodes, [z], outs, inits)


def _rebuild(model: onnx.ModelProto, nodes: list, inputs: list, outputs: list,
             inits: list) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "vae", inputs, outputs,
                              [*model.graph.initializer, *inits])
    out = helper.make_model(graph, opset_imports=list(model.opset_import),
                            producer_name="vae-serving import_onnx")
    out.ir_version = model.ir_version
    onnx.checker.check_model(out, full_check=True)
    return out


def compare(path: Path, feeds: dict[str, np.ndarray]) -> float:
    """max |onnxruntime - onnx reference evaluator| over every output."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, feeds)
    want = ReferenceEvaluator(str(path)).run(None, feeds)
    return max(float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())
               for a, b in zip(got, want, strict=True))


def import_onnx(encoder: str, decoder: str, *, input_shape: list[int], likelihood: str,
                decoder_output: str, repository: str | Path, name: str,
                encoder_outputs: list[str] | None = None, obs_sigma: float | None = None,
                input_range: tuple[float, float] = (0.0, 1.0)) -> Path:
    enc_in, dec_in = _load(encoder, "encoder"), _load(decoder, "decoder")
    outputs = encoder_outputs or [o.name for o in enc_in.graph.output][:2]
    version = next_version(repository, name)
    stage = staging_dir(repository, name)
    try:
        onnx.save(wrap_encoder(enc_in, input_shape, outputs), str(stage / "encoder.onnx"))
        onnx.save(wrap_decoder(dec_in, input_shape, likelihood, decoder_output, obs_sigma),
                  str(stage / "decoder.onnx"))
        graphs = {g: graph_entry(stage / f"{g}.onnx", check_graph(stage / f"{g}.onnx"))
                  for g in ("encoder", "decoder")}
        rng = np.random.default_rng(0)
        enc_diff = dec_diff = 0.0
        latent = None
        for n in BATCHES:
            x = rng.uniform(*input_range, (n, *input_shape)).astype(np.float32)
            mu = ort.InferenceSession(str(stage / "encoder.onnx")).run(["mu"], {"x": x})[0]
            if mu.ndim != 2:
                raise ValueError(f"encoder: mu must be [N, Z], got shape {list(mu.shape)}")
            latent = mu.shape[1]
            enc_diff = max(enc_diff, compare(stage / "encoder.onnx", {"x": x}))
            z = rng.standard_normal((n, latent)).astype(np.float32)
            dec_diff = max(dec_diff, compare(stage / "decoder.onnx", {"z": z}))
        par = Parity(batch_sizes=BATCHES, encoder_max_abs_diff=enc_diff,
                     decoder_max_abs_diff=dec_diff, tolerance=TOLERANCE)
        if max(enc_diff, dec_diff) > TOLERANCE:
            raise ValueError(f"onnxruntime and onnx's reference evaluator differ by "
                             f"{max(enc_diff, dec_diff):.2e} > {TOLERANCE:g}: {par}")
        write_manifest(stage, name=name, version=version,
                       input=InputSpec(shape=input_shape, range=input_range),
                       latent_dim=latent, likelihood=likelihood, graphs=graphs, parity=par,
                       training={"source": "import_onnx", "decoder_output": decoder_output,
                                 "note": "imported graphs: no reference set, no variants"})
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return publish(stage, repository, name, version)


def _shape(text: str) -> list[int]:
    try:
        dims = [int(d) for d in text.split(",")]
    except ValueError:
        dims = []
    if len(dims) != 3 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not C,H,W (three positive integers)")
    return dims


def main(argv: list[str] | None = None) -> None:
    p = Parser(prog="vae-import-onnx", description=__doc__.splitlines()[0])
    p.add_argument("--encoder", required=True, help="the encoder graph: x -> mu, logvar")
    p.add_argument("--decoder", required=True, help="the decoder graph: z -> x")
    p.add_argument("--input-shape", required=True, type=_shape,
                   help="one item's shape C,H,W, e.g. 1,28,28")
    p.add_argument("--likelihood", default="bernoulli", choices=["bernoulli", "gaussian"],
                   help="p(x|z) the decoder parameterizes")
    p.add_argument("--decoder-output", default="probs", choices=["probs", "logits", "mean"],
                   help="what the decoder graph outputs")
    p.add_argument("--obs-sigma", type=float, default=None,
                   help="gaussian: the observation standard deviation")
    p.add_argument("--encoder-outputs", default=None,
                   help="the encoder's mu,logvar output names (default: its first two outputs)")
    p.add_argument("--repository", default="models", help="the model repository")
    p.add_argument("--name", required=True, type=model_name_arg, help="the model's name")
    a = p.parse_args(argv)
    try:
        path = import_onnx(a.encoder, a.decoder, input_shape=a.input_shape,
                           likelihood=a.likelihood, decoder_output=a.decoder_output,
                           repository=a.repository, name=a.name, obs_sigma=a.obs_sigma,
                           encoder_outputs=None if a.encoder_outputs is None else
                           a.encoder_outputs.split(","))
    except (ValueError, OSError, onnx.checker.ValidationError) as exc:
        raise SystemExit(f"export.import_onnx: {exc}") from None
    print(path)


if __name__ == "__main__":
    main()
