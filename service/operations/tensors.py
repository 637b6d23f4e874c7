"""Tensor encodings of the contract ("Tensors in requests"): JSON arrays, {"npy": base64},
{"png": [base64, ...]}, or an array a door decoded already (V2 tensors).

Decoders validate everything before a tensor reaches a model: type, shape, finiteness, range,
item limits. Each error names the field and the limit.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
from typing import Any

import numpy as np
import pybase64
from PIL import Image, UnidentifiedImageError

from service.errors import BadInput, LimitExceeded

OUTPUT_FORMATS = ("json", "npy", "png")


def _b64(data: Any, field: str) -> bytes:
    if not isinstance(data, str):
        raise BadInput(f"{field}: expected a base64 string")
    try:
        # pybase64 (SIMD) decodes several times faster than binascii (docs/BENCHMARKS.md)
        return pybase64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        pass
    try:  # the stdlib's message says what is wrong (padding, a character); pybase64's does not
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadInput(f"{field}: invalid base64 ({exc})") from None


# The header numpy itself writes for the dtypes accepted here, in C order
_NPY_HEADER = re.compile(rb"\{'descr': '(<f4|<f8|\|u1)', 'fortran_order': False, "
                         rb"'shape': \(((?:\d+, ?)*\d*)\), \} *\n")


_HEADERS: dict[bytes, tuple[np.dtype, tuple[int, ...], int, int]] = {}  # header -> parsed


def load_npy(raw: bytes) -> np.ndarray:
    """np.load(allow_pickle=False) of raw .npy bytes. The usual file (numpy's own header,
    float32/float64/uint8, C order, exact length) is read straight from the buffer: np.load's file
    wrapper and ast parse of the header were a large share of a one-item npy /encode
    (docs/BENCHMARKS.md, P4). Headers seen before are looked up (clients send the same shapes
    again and again; the regex and int parsing were half of what remained). Anything else,
    malformed files included, goes to np.load itself."""
    major = raw[6] if len(raw) > 10 and raw[:6] == b"\x93NUMPY" else 0
    start = 10 if major == 1 else 12 if major in (2, 3) else 0
    if start:
        end = start + int.from_bytes(raw[8:start], "little")
        header = raw[start:end]
        parsed = _HEADERS.get(header)
        if parsed is None and (m := _NPY_HEADER.fullmatch(header)):
            shape = tuple(int(v) for v in m[2].split(b",") if v.strip())
            dtype = np.dtype(m[1].decode())
            count = math.prod(shape)
            parsed = (dtype, shape, count, count * dtype.itemsize)
            if len(_HEADERS) < 256:  # bounded: shapes come from clients
                _HEADERS[header] = parsed
        if parsed is not None and len(raw) - end == parsed[3]:
            dtype, shape, count, _ = parsed
            return np.frombuffer(raw, dtype, count, end).reshape(shape).copy()
    return np.load(io.BytesIO(raw), allow_pickle=False)


def _from_npy(data: Any, field: str) -> np.ndarray:
    raw = _b64(data, f"{field}.npy")
    try:
        arr = load_npy(raw)
    except (ValueError, OSError, EOFError) as exc:
        raise BadInput(f"{field}.npy: not a readable .npy file without pickle ({exc})") from None
    if not isinstance(arr, np.ndarray):
        raise BadInput(f"{field}.npy: expected one array")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / np.float32(255.0)
    if arr.dtype not in (np.float32, np.float64):
        raise BadInput(f"{field}.npy: dtype {arr.dtype} not accepted (float32, float64 or uint8)")
    return arr.astype(np.float32, copy=False)


def _from_png(items: Any, field: str, shape: list[int]) -> np.ndarray:
    c, h, w = shape
    if not isinstance(items, list) or not items:
        raise BadInput(f"{field}.png: expected a non-empty list of base64 PNG images")
    out = np.empty((len(items), c, h, w), dtype=np.float32)
    for i, item in enumerate(items):
        raw = _b64(item, f"{field}.png[{i}]")
        try:
            img = Image.open(io.BytesIO(raw), formats=["PNG"])
            # The size is read from the header: a decompression bomb is refused before decoding.
            if img.size != (w, h):
                raise BadInput(f"{field}.png[{i}]: image is {img.size[0]}x{img.size[1]}, "
                               f"the model takes exactly {w}x{h} (W x H)")
            img = img.convert("L" if c == 1 else "RGB")
        except UnidentifiedImageError:
            raise BadInput(f"{field}.png[{i}]: not a PNG image{_what_it_is(raw)}; send PNG "
                           "(or the image as a JSON array or npy)") from None
        except (Image.DecompressionBombError, OSError, ValueError) as exc:
            raise BadInput(f"{field}.png[{i}]: not a readable PNG ({exc})") from None
        px = np.asarray(img, dtype=np.float32) / np.float32(255.0)
        out[i] = px[None] if c == 1 else px.transpose(2, 0, 1)
    return out


def _from_json(value: list, field: str) -> np.ndarray:
    try:
        with np.errstate(over="ignore"):  # too large for float32 -> inf, refused as not finite
            return np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError):
        raise BadInput(f"{field}: expected a rectangular array of numbers") from None


def _raw_array(value: Any, field: str, shape: list[int] | None) -> np.ndarray:
    if isinstance(value, np.ndarray):  # decoded by a door already (V2 tensors)
        return value.astype(np.float32, copy=False)
    if isinstance(value, list):
        return _from_json(value, field)
    if isinstance(value, dict) and len(value) == 1 and "npy" in value:
        return _from_npy(value["npy"], field)
    if isinstance(value, dict) and len(value) == 1 and "png" in value and shape is not None:
        return _from_png(value["png"], field, shape)
    kinds = 'a JSON array, {"npy": base64}' + (' or {"png": [base64, ...]}' if shape else "")
    raise BadInput(f"{field}: expected {kinds}")


def shape_text(shape: Any) -> str:
    """One format for shapes in every message: [N, 1, 8, 8]."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


_MAGIC = {b"\xff\xd8\xff": "JPEG", b"GIF8": "GIF", b"BM": "BMP", b"RIFF": "WebP",
          b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"\x93NUMPY": ".npy"}


def _what_it_is(raw: bytes) -> str:
    """' (the bytes are a JPEG file)' when the first bytes say what was sent instead."""
    kind = next((k for magic, k in _MAGIC.items() if raw.startswith(magic)), None)
    return f" (the bytes are a {kind} file)" if kind else ""


def _check_items(arr: np.ndarray, field: str, max_items: int) -> None:
    if arr.shape[0] < 1:
        raise BadInput(f"{field}: at least 1 item is required")
    if arr.shape[0] > max_items:
        raise LimitExceeded(f"{field}: {arr.shape[0]} items exceed the limit of {max_items} "
                            "per request (VAE_MAX_ITEMS)")


def check_values(arr: np.ndarray, field: str,
                 value_range: tuple[float, float] | None = None) -> None:
    """Every value finite, and inside value_range when given (non-empty arr). With finite
    bounds one min/max pass decides both, since NaN fails every comparison; the isfinite pass
    runs only when it must (a hot path for one-item requests)."""
    if value_range is None:
        inside, bounded = True, False
    else:
        lo, hi = value_range
        low, high = arr.min(), arr.max()
        inside, bounded = bool(lo <= low and high <= hi), math.isfinite(lo) and math.isfinite(hi)
    if (not inside or not bounded) and not np.isfinite(arr).all():
        raise BadInput(f"{field}: values must be finite (no NaN or Inf)")
    if not inside:
        raise BadInput(f"{field}: values must lie in [{lo}, {hi}], got "
                       f"[{float(low):.4g}, {float(high):.4g}]")


def decode_images(value: Any, field: str, shape: list[int], value_range: tuple[float, float],
                  max_items: int) -> np.ndarray:
    """-> float32 [N, C, H, W]. Accepts [N, *S], [N, prod(S)] and, when C == 1, [N, H, W]."""
    arr = _raw_array(value, field, shape)
    c, h, w = shape
    accepted = [[c, h, w], [c * h * w]] + ([[h, w]] if c == 1 else [])
    if arr.ndim < 2 or list(arr.shape[1:]) not in accepted:
        forms = ", ".join(shape_text(["N", *a]) for a in accepted)
        hint = (f"; a single item needs the batch axis too: {shape_text([1, *arr.shape])}"
                if list(arr.shape) in accepted else "")
        raise BadInput(f"{field}: shape {shape_text(arr.shape)} does not fit the model's "
                       f"images, which are {forms}{hint}")
    _check_items(arr, field, max_items)
    arr = arr.reshape(arr.shape[0], c, h, w)
    check_values(arr, field, value_range)
    return np.ascontiguousarray(arr)


def decode_latents(value: Any, field: str, latent_dim: int, max_items: int) -> np.ndarray:
    """-> float32 [N, Z] from a JSON array or {"npy": ...}."""
    arr = _raw_array(value, field, None)
    if arr.ndim != 2 or arr.shape[1] != latent_dim:
        hint = (f"; a single code needs the batch axis too: {shape_text([1, *arr.shape])}"
                if list(arr.shape) == [latent_dim] else "")
        raise BadInput(f"{field}: shape {shape_text(arr.shape)} does not fit the model's "
                       f"latent codes, which are {shape_text(['N', latent_dim])}{hint}")
    _check_items(arr, field, max_items)
    check_values(arr, field)
    return np.ascontiguousarray(arr)


def encode_images(arr: np.ndarray, fmt: str) -> Any:
    """[..., C, H, W] float32 -> the response field in the request's output_format (json: the
    array itself, written as nested lists by the JSON door, service/doors/http_json.py)."""
    if fmt == "json":
        return arr
    if fmt == "npy":
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(arr, dtype=np.float32), allow_pickle=False)
        return {"npy": pybase64.b64encode_as_string(buf.getbuffer())}
    # png: one image per item, interpolation paths flattened item-major.
    c, h, w = arr.shape[-3:]
    flat = arr.reshape(math.prod(arr.shape[:-3]), c, h, w)
    px = np.clip(np.rint(flat * 255.0), 0, 255).astype(np.uint8)
    images = []
    for item in px:
        img = Image.fromarray(item[0] if c == 1 else item.transpose(1, 2, 0))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        images.append(pybase64.b64encode_as_string(buf.getbuffer()))
    return {"png": images}
