"""A job's input: items with an id, read by position so that any shard [start, stop) can be
read on any worker. Formats: .npy, .npz (one array, or --key), IDX (gzipped or not), a folder
of images (recursively; the path relative to the folder is the id), Parquet (an array column
or a column of encoded images; --id-column names the ids, else the row number).

An item that cannot be used (wrong shape, unreadable image, NaN, values out of range) becomes an
error with its id and the reason; the others go on. Values are scaled as the service scales
them: uint8 (and images) / 255, floats as they are, then checked against the model's range."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from modelrepo.idx import read_idx

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class Batch:
    """Items [start, stop) of a source: the good ones' ids and array, the bad ones' reasons."""
    ids: list[str]
    x: np.ndarray  # float32 [n, C, H, W]
    errors: list[tuple[str, str]] = field(default_factory=list)
    pos: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # the good items'
    # positions in the input (what seeds their draws, whatever the batching)


@dataclass(frozen=True)
class InputSpec:
    """Where the items are and how to read them: plain data, so Ray can ship it to workers."""
    path: str
    key: str | None = None  # .npz: which array
    column: str | None = None  # Parquet: the items' column
    id_column: str | None = None  # Parquet: the ids' column


class Source:
    """Items of one input, by position."""

    def __init__(self, spec: InputSpec, shape: list[int], value_range: tuple[float, float]):
        self.spec, self.shape, self.range = spec, list(shape), value_range
        self.path = Path(spec.path)
        if not self.path.exists():
            raise ValueError(f"--input {spec.path}: no such file or folder")
        self._files: list[Path] | None = None
        self._table = None
        self._array: np.ndarray | None = None
        self.kind = self._kind()

    def _kind(self) -> str:
        p = self.path
        if p.is_dir():
            return "images"
        name = p.name.lower()
        if name.endswith(".npy"):
            return "npy"
        if name.endswith(".npz"):
            return "npz"
        if name.endswith(".parquet"):
            return "parquet"
        if "idx" in name or name.endswith("-ubyte") or name.endswith("-ubyte.gz"):
            return "idx"
        raise ValueError(f"--input {p}: not a format jobs read (.npy, .npz, IDX such as "
                         "t10k-images-idx3-ubyte.gz, .parquet, or a folder of images)")

    # ---- the whole input, opened lazily (a worker opens it once) ---------------------------
    def _arr(self) -> np.ndarray:
        if self._array is None:
            if self.kind == "npy":
                self._array = np.load(self.path, mmap_mode="r", allow_pickle=False)
            elif self.kind == "npz":
                with np.load(self.path, allow_pickle=False) as f:
                    keys = list(f.files)
                    key = self.spec.key or (keys[0] if len(keys) == 1 else None)
                    if key not in keys:
                        raise ValueError(f"--key: {self.path} holds {keys}; name one with --key")
                    self._array = f[key]
            else:
                self._array = read_idx(self.path)
        return self._array

    def _image_files(self) -> list[Path]:
        if self._files is None:
            self._files = sorted(p for p in self.path.rglob("*")
                                 if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not self._files:
                raise ValueError(f"--input {self.path}: no .png/.jpg/.jpeg files in it")
        return self._files

    def _parquet(self):
        if self._table is None:
            import pyarrow.parquet as pq

            table = pq.read_table(self.path)
            col = self.spec.column or next(
                (f.name for f in table.schema if f.name != self.spec.id_column), None)
            if col not in table.column_names:
                raise ValueError(f"--column: {self.path} has columns {table.column_names}")
            if self.spec.id_column and self.spec.id_column not in table.column_names:
                raise ValueError(f"--id-column: {self.path} has columns {table.column_names}")
            self._table = (table, col)
        return self._table

    def __len__(self) -> int:
        if self.kind == "images":
            return len(self._image_files())
        if self.kind == "parquet":
            return self._parquet()[0].num_rows
        return len(self._arr())

    # ---- items ------------------------------------------------------------------------------
    def read(self, start: int, stop: int) -> Batch:
        if self.kind in ("npy", "npz", "idx"):
            return self._read_array(start, stop)
        ids: list[str] = []
        rows: list[np.ndarray] = []
        pos: list[int] = []
        errors: list[tuple[str, str]] = []
        for i, (item_id, value) in enumerate(self._raw(start, stop), start):
            try:
                rows.append(self._item(value))
                ids.append(item_id)
                pos.append(i)
            except ValueError as exc:
                errors.append((item_id, str(exc)))
        x = np.stack(rows) if rows else np.empty((0, *self.shape), np.float32)
        return Batch(ids, x, errors, np.array(pos, dtype=np.int64))

    def _read_array(self, start: int, stop: int) -> Batch:
        """A slice of one array, checked as a whole (every item shares the array's shape),
        values row by row but vectorized: the per-item loop would cost more than the model."""
        c, h, w = self.shape
        arr = self._arr()
        stop = min(stop, len(arr))
        ids = [str(i) for i in range(start, stop)]
        accepted = ([c, h, w], [c * h * w], *([[h, w]] if c == 1 else []))
        if list(arr.shape[1:]) not in accepted:
            why = (f"shape {list(arr.shape[1:])} does not fit the model's items "
                   f"({', '.join(map(str, accepted))})")
            return Batch([], np.empty((0, c, h, w), np.float32), [(i, why) for i in ids])
        part = np.asarray(arr[start:stop])
        if part.dtype == np.uint8:
            x = part.astype(np.float32)
            x /= np.float32(255.0)  # in place (as the service divides: the same bits)
        elif part.dtype.kind in "fiu":
            x = part.astype(np.float32)
        else:
            why = f"dtype {part.dtype} is not numeric"
            return Batch([], np.empty((0, c, h, w), np.float32), [(i, why) for i in ids])
        x = x.reshape(len(ids), c, h, w)
        pos = np.arange(start, stop, dtype=np.int64)
        lo, hi = self.range
        if part.dtype == np.uint8 and lo <= 0 and hi >= 1:  # /255: finite and in range
            return Batch(ids, np.ascontiguousarray(x), [], pos)
        flat = x.reshape(len(ids), -1)
        with np.errstate(invalid="ignore"):
            finite = np.isfinite(flat).all(axis=1)
            inside = (flat >= lo).all(axis=1) & (flat <= hi).all(axis=1)
        ok = finite & inside
        if ok.all():
            return Batch(ids, np.ascontiguousarray(x), [], pos)
        errors = [(ids[i], "values must be finite (NaN or Inf found)" if not finite[i] else
                   f"values must lie in [{lo}, {hi}], got [{float(flat[i].min()):.4g}, "
                   f"{float(flat[i].max()):.4g}]") for i in np.flatnonzero(~ok)]
        return Batch([ids[i] for i in np.flatnonzero(ok)], np.ascontiguousarray(x[ok]), errors,
                     pos[ok])

    def _raw(self, start: int, stop: int):
        if self.kind == "images":
            root = self.path
            for p in self._image_files()[start:stop]:
                yield str(p.relative_to(root)), p
        elif self.kind == "parquet":
            import pyarrow as pa

            table, col = self._parquet()
            part = table.slice(start, stop - start)
            ids = part.column(self.spec.id_column).to_pylist() if self.spec.id_column \
                else range(start, stop)
            kind = table.schema.field(col).type
            u8 = getattr(kind, "value_type", None) == pa.uint8()  # keep uint8's meaning
            for i, v in zip(ids, part.column(col).to_pylist(), strict=True):
                yield str(i), (np.asarray(v, np.uint8) if u8 and v is not None else v)
        else:
            arr = self._arr()
            for i in range(start, min(stop, len(arr))):
                yield str(i), arr[i]

    def _item(self, value: object) -> np.ndarray:
        """One item as float32 [C, H, W] in the model's range; ValueError saying why not."""
        c, h, w = self.shape
        if isinstance(value, Path | bytes):
            arr = _decode_image(value, c, (w, h))
        else:
            if value is None:
                raise ValueError("no value")
            arr = np.asarray(value)
            if arr.dtype == np.uint8:
                arr = arr.astype(np.float32) / np.float32(255.0)
            elif arr.dtype.kind in "fiu":
                arr = arr.astype(np.float32)
            else:
                raise ValueError(f"dtype {arr.dtype} is not numeric")
        accepted = ([c, h, w], [c * h * w], *([[h, w]] if c == 1 else []))
        if list(arr.shape) not in accepted:
            raise ValueError(f"shape {list(arr.shape)} does not fit the model's items "
                             f"({', '.join(map(str, accepted))})")
        arr = arr.reshape(c, h, w)
        if not np.isfinite(arr).all():
            raise ValueError("values must be finite (NaN or Inf found)")
        lo, hi = self.range
        if (math.isfinite(lo) and arr.min() < lo) or (math.isfinite(hi) and arr.max() > hi):
            raise ValueError(f"values must lie in [{lo}, {hi}], got "
                             f"[{float(arr.min()):.4g}, {float(arr.max()):.4g}]")
        return arr


def _decode_image(value: Path | bytes, channels: int, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(value if isinstance(value, Path) else io.BytesIO(value))
        if img.size != size:  # read from the header, before decoding
            raise ValueError(f"image is {img.size[0]}x{img.size[1]}, the model takes "
                             f"{size[0]}x{size[1]}")
        px = np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.float32)
    except UnidentifiedImageError:
        raise ValueError("not a readable image (PNG or JPEG)") from None
    except (OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not a readable image ({exc})") from None
    px /= np.float32(255.0)
    return px[None] if channels == 1 else px.transpose(2, 0, 1)
