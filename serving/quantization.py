"""Quantized embeddings, as Cohere serves them and sentence-transformers' `quantize_embeddings`
computes them: `int8` / `uint8` (one byte per dimension, per-dimension ranges) and `binary` /
`ubinary` (the sign bits, eight dimensions per byte).

Output formatting only: the API's dialects and the bulk job call it on the float vectors an
engine returned (after MRL truncation and re-normalisation). No HTTP, no Ray, no vLLM.

- `ubinary`: `np.packbits(v > 0)` per vector, as uint8; `binary`: that minus 128, as int8.
  A dimension count that is not a multiple of 8 pads each vector's last byte with zero bits.
- `uint8`: `floor((v - start) / step)` clipped to [0, 255], with `step = (max - min) / 255`;
  `int8`: that minus 128. As sentence-transformers 6.2 computes them (earlier releases cast
  without flooring or clipping, so an outlier wrapped around).
- Ranges (min and max per dimension) come from calibration embeddings (`qwen3-serve calibrate`):
  for D output dimensions, the calibration vectors truncated to D and re-normalised, as the
  engine does with the served vectors. Without calibration, [-1, 1] for every dimension, which
  holds every L2-normalised vector but spends most of the 256 steps on values that never occur.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

import numpy as np

EmbeddingType = Literal["float", "int8", "uint8", "binary", "ubinary"]
EMBEDDING_TYPES: tuple[str, ...] = get_args(EmbeddingType)
DEFAULT_RANGE = (-1.0, 1.0)


class CalibrationError(ValueError):
    """A calibration file that cannot be used, or that does not fit the model's vectors."""


def quantize(vectors: np.ndarray, embedding_type: str, ranges: np.ndarray | None = None) -> np.ndarray:
    """`vectors` (n, D) float as `embedding_type`. `ranges` (2, D): per-dimension min and max, for
    `int8` / `uint8` only; None: [-1, 1]."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if embedding_type == "float":
        return vectors
    if embedding_type in ("binary", "ubinary"):
        packed = np.packbits(vectors > 0, axis=-1)
        return packed if embedding_type == "ubinary" else (packed.astype(np.int16) - 128).astype(np.int8)
    if embedding_type not in ("int8", "uint8"):
        raise ValueError(f"unknown embedding type {embedding_type!r}; one of {', '.join(EMBEDDING_TYPES)}")
    if ranges is None:
        ranges = default_ranges(vectors.shape[-1])
    starts = ranges[0, :]
    steps = (ranges[1, :] - ranges[0, :]) / 255
    levels = np.clip(np.floor((vectors - starts) / steps), 0, 255)
    return levels.astype(np.uint8) if embedding_type == "uint8" else (levels - 128).astype(np.int8)


def default_ranges(dimensions: int) -> np.ndarray:
    return np.array([[DEFAULT_RANGE[0]] * dimensions, [DEFAULT_RANGE[1]] * dimensions], dtype=np.float32)


def calibration_ranges(calibration: np.ndarray, dimensions: int) -> np.ndarray:
    """(2, dimensions) min and max of the calibration vectors as the engine serves `dimensions`:
    truncated, then L2-normalised again. At their full width they are taken as they are (they are
    served vectors), as sentence-transformers takes `calibration_embeddings`."""
    cut = np.asarray(calibration[:, :dimensions], dtype=np.float32)
    if dimensions < calibration.shape[1]:
        norms = np.linalg.norm(cut, axis=1, keepdims=True)
        cut = cut / np.where(norms > 0, norms, 1)
    ranges = np.vstack((cut.min(axis=0), cut.max(axis=0))).astype(np.float32)
    # A dimension the calibration never varied has no width to divide; it gets the default range.
    flat = ranges[1] <= ranges[0]
    ranges[:, flat] = default_ranges(int(flat.sum()))
    return ranges


class Quantizer:
    """One embed model's quantization: its calibration vectors (or none) and the ranges they give
    per served dimension count, computed on first use and kept."""

    def __init__(self, calibration: np.ndarray | None = None, source: str = "calibration"):
        self.calibration = calibration
        self.source = source
        self._ranges: dict[int, np.ndarray] = {}

    @classmethod
    def load(cls, path: str | Path | None) -> Quantizer:
        """From a `.npy` of calibration embeddings (rows: vectors at the model's full dimension)."""
        if path is None:
            return cls()
        try:
            calibration = np.load(Path(path).expanduser(), allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CalibrationError(f"cannot read calibration file {path}: {exc}") from exc
        if calibration.ndim != 2 or calibration.shape[0] < 2 or not np.issubdtype(calibration.dtype, np.floating):
            raise CalibrationError(f"calibration file {path} holds a {calibration.dtype} array of shape "
                                   f"{calibration.shape}; expected float vectors, (n >= 2, hidden size)")
        if not np.isfinite(calibration).all():
            raise CalibrationError(f"calibration file {path} holds NaN or infinite values")
        return cls(calibration.astype(np.float32, copy=False), source=str(path))

    def ranges(self, dimensions: int) -> np.ndarray:
        if self.calibration is None:
            return default_ranges(dimensions)
        if dimensions > self.calibration.shape[1]:
            raise CalibrationError(f"{self.source} has {self.calibration.shape[1]}-dimensional vectors; the "
                                   f"model served {dimensions}: calibrate again with this model")
        if dimensions not in self._ranges:
            self._ranges[dimensions] = calibration_ranges(self.calibration, dimensions)
        return self._ranges[dimensions]

    def quantize(self, vectors: np.ndarray, embedding_type: str, *, full_width: bool) -> np.ndarray:
        """`full_width`: the vectors are the model's full dimension (no MRL `dimensions` asked for),
        which the calibration must match exactly."""
        if embedding_type not in ("int8", "uint8"):
            return quantize(vectors, embedding_type)
        width = vectors.shape[-1]
        if full_width and self.calibration is not None and width != self.calibration.shape[1]:
            raise CalibrationError(f"{self.source} has {self.calibration.shape[1]}-dimensional vectors; the "
                                   f"model's are {width}-dimensional: calibrate again with this model")
        return quantize(vectors, embedding_type, self.ranges(width))
