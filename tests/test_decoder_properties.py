"""Hypothesis properties of the tensor decoders: whatever arrives, the decoder either returns
a finite float32 array of the promised shape and range, or raises BadInput — never anything
else; and the encodings round-trip."""

from __future__ import annotations

import base64
import io

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from service.errors import BadInput
from service.operations.tensors import decode_images, decode_latents, encode_images
from service.operations.v2 import to_array

SHAPE = [1, 8, 8]
json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True, allow_infinity=True) |
    st.integers(min_value=-(10**20), max_value=10**20) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                  max_size=3),
    max_leaves=40)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_decode_images_accepts_or_refuses_cleanly(value):
    try:
        x = decode_images(value, "inputs", SHAPE, (0.0, 1.0), 64)
    except BadInput as exc:
        assert exc.message.startswith("inputs")
        return
    assert x.dtype == np.float32 and list(x.shape[1:]) == SHAPE and 1 <= len(x) <= 64
    assert np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=4, max_side=9),
                  elements=st.floats(-2, 2, width=32)))
def test_npy_payloads_are_decoded_or_refused(arr):
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    value = {"npy": base64.b64encode(buf.getvalue()).decode()}
    try:
        x = decode_images(value, "inputs", SHAPE, (0.0, 1.0), 64)
    except BadInput:
        return
    assert np.array_equal(x.reshape(arr.shape), arr)


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(np.float32, st.tuples(st.integers(1, 6), st.just(1), st.just(8), st.just(8)),
                  elements=st.floats(0, 1, width=32)))
def test_npy_output_round_trips_exactly(x):
    assert np.array_equal(decode_images(encode_images(x, "npy"), "inputs", SHAPE, (0.0, 1.0),
                                        64), x)
    png = decode_images(encode_images(x, "png"), "inputs", SHAPE, (0.0, 1.0), 64)
    assert np.abs(png - x).max() <= 0.5 / 255 + 1e-6  # 8-bit quantisation only


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_decode_latents_accepts_or_refuses_cleanly(value):
    try:
        z = decode_latents(value, "z", 4, 64)
    except BadInput as exc:
        assert exc.message.startswith("z")
        return
    assert z.dtype == np.float32 and z.shape[1] == 4 and np.isfinite(z).all()


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["FP32", "INT32", "INT64", "FP16", "BOOL", "BF16", "BYTES"]),
       st.lists(st.integers(-3, 5), max_size=4), st.binary(max_size=64) | json_values)
def test_v2_tensors_decode_or_refuse_cleanly(datatype, shape, data):
    try:
        arr = to_array("x", datatype, shape, data)
    except BadInput as exc:
        assert exc.message.startswith("x")
        return
    assert list(arr.shape) == shape
