"""Quantized embeddings (`serving/quantization.py`) against sentence-transformers' `quantize_embeddings`.

sentence-transformers is not a dependency, so `st_quantize` restates its function
(sentence_transformers/util/quantization.py, release 6.2) for the float-array input the server
has: ranges from `ranges`, else from the calibration embeddings' per-dimension min and max;
`uint8` = floor((x - start) / step) clipped to [0, 255], `int8` that minus 128; `binary` /
`ubinary` pack each row's sign bits.
"""

import numpy as np
import pytest

from serving.quantization import (
    DEFAULT_RANGE,
    CalibrationError,
    Quantizer,
    calibration_ranges,
    quantize,
)


def st_quantize(embeddings, precision, ranges=None, calibration_embeddings=None):
    if precision in ("int8", "uint8"):
        if ranges is None:
            source = calibration_embeddings if calibration_embeddings is not None else embeddings
            ranges = np.vstack((np.min(source, axis=0), np.max(source, axis=0)))
        ranges = ranges.astype(np.float32)
        starts = ranges[0, :]
        steps = (ranges[1, :] - starts) / 255
        levels = np.clip(np.floor((embeddings - starts) / steps), 0, 255)
        return levels.astype(np.uint8) if precision == "uint8" else (levels - 128).astype(np.int8)
    packed = np.packbits(embeddings > 0, axis=-1)
    return packed if precision == "ubinary" else (packed - 128).astype(np.int8)


def normalised(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def vectors(n: int, d: int, seed: int = 0) -> np.ndarray:
    return normalised(np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32))


def inside(calibration: np.ndarray, n: int, seed: int = 1) -> np.ndarray:
    """Vectors whose every value lies within the calibration's range (sentence-transformers does not
    clip, so only these can be compared exactly)."""
    lo, hi = calibration.min(axis=0), calibration.max(axis=0)
    return (lo + np.random.default_rng(seed).random((n, calibration.shape[1])) * (hi - lo)).astype(np.float32)


@pytest.mark.parametrize("precision", ["binary", "ubinary"])
def test_sign_bits_are_packed_as_sentence_transformers_packs_them(precision):
    x = vectors(7, 64)
    x[0, :8] = 0.0  # zero is not positive: a 0 bit, as in sentence-transformers
    ours = quantize(x, precision)
    assert ours.dtype == (np.int8 if precision == "binary" else np.uint8)
    np.testing.assert_array_equal(ours, st_quantize(x, precision))


@pytest.mark.parametrize("precision", ["int8", "uint8"])
def test_calibrated_bytes_equal_sentence_transformers_with_the_same_calibration(precision):
    calibration = vectors(200, 64, seed=3)
    x = np.vstack((calibration[:20], inside(calibration, 30)))
    ours = Quantizer(calibration).quantize(x, precision, full_width=True)
    assert ours.dtype == np.dtype(precision)
    np.testing.assert_array_equal(ours, st_quantize(x, precision, calibration_embeddings=calibration))


@pytest.mark.parametrize("precision", ["int8", "uint8"])
def test_without_calibration_the_range_is_minus_one_to_one_in_every_dimension(precision):
    x = vectors(9, 32)
    ranges = np.array([[DEFAULT_RANGE[0]] * 32, [DEFAULT_RANGE[1]] * 32], dtype=np.float32)
    np.testing.assert_array_equal(Quantizer().quantize(x, precision, full_width=True),
                                  st_quantize(x, precision, ranges=ranges))


def test_values_outside_the_range_saturate_instead_of_wrapping():
    calibration = vectors(50, 16, seed=4)
    x = np.vstack((calibration.max(axis=0) + 0.5, calibration.min(axis=0) - 0.5)).astype(np.float32)
    q = Quantizer(calibration)
    assert q.quantize(x, "uint8", full_width=True).tolist() == [[255] * 16, [0] * 16]
    assert q.quantize(x, "int8", full_width=True).tolist() == [[127] * 16, [-128] * 16]


def test_mrl_ranges_come_from_the_calibration_truncated_and_normalised_again():
    calibration = vectors(300, 128, seed=5)
    served = normalised(vectors(40, 128, seed=6)[:, :48])  # what the engine returns for dimensions=48
    expected_ranges = calibration_ranges(calibration, 48)
    mrl_calibration = normalised(calibration[:, :48])
    np.testing.assert_array_equal(expected_ranges, np.vstack((mrl_calibration.min(0), mrl_calibration.max(0))))
    # Quantized after MRL: the same bytes sentence-transformers gives the 48-dimensional vectors
    # with the 48-dimensional calibration (clipped, as ours saturate).
    inside_served = np.clip(served, mrl_calibration.min(0), mrl_calibration.max(0))
    np.testing.assert_array_equal(Quantizer(calibration).quantize(inside_served, "int8", full_width=False),
                                  st_quantize(inside_served, "int8", calibration_embeddings=mrl_calibration))
    # ... and not the full-width ranges cut to 48 columns
    assert not np.array_equal(expected_ranges, calibration_ranges(calibration, 128)[:, :48])


def test_ranges_are_computed_once_per_dimension_count():
    q = Quantizer(vectors(20, 64))
    assert q.ranges(32) is q.ranges(32)
    assert q.ranges(32).shape == (2, 32) and q.ranges(64).shape == (2, 64)


def test_a_dimension_the_calibration_never_varies_gets_the_default_range():
    calibration = vectors(10, 16)
    calibration[:, 3] = 0.25
    ranges = calibration_ranges(calibration, 16)
    assert ranges[:, 3].tolist() == list(DEFAULT_RANGE)
    assert np.isfinite(quantize(calibration, "int8", ranges).astype(float)).all()


def test_dimensions_not_a_multiple_of_eight_pad_each_vector_with_zero_bits():
    x = vectors(3, 44)
    packed = quantize(x, "ubinary")
    assert packed.shape == (3, 6)
    for row, v in zip(packed, x):
        bits = np.unpackbits(row)
        assert bits[:44].tolist() == (v > 0).astype(int).tolist() and not bits[44:].any()
    np.testing.assert_array_equal(quantize(x, "binary"), (packed.astype(int) - 128).astype(np.int8))


def test_float_is_the_vectors_unchanged():
    x = vectors(2, 8)
    np.testing.assert_array_equal(quantize(x, "float"), x)


def test_calibration_of_another_width_is_refused():
    q = Quantizer(vectors(10, 64), source="cal.npy")
    with pytest.raises(CalibrationError, match="cal.npy has 64-dimensional"):
        q.quantize(vectors(2, 32), "int8", full_width=True)
    with pytest.raises(CalibrationError, match="served 96"):
        q.quantize(vectors(2, 96), "uint8", full_width=False)
    assert q.quantize(vectors(2, 96), "ubinary", full_width=True).shape == (2, 12)  # signs need no ranges


def test_calibration_loads_from_npy_and_bad_files_say_why(tmp_path):
    good = tmp_path / "cal.npy"
    np.save(good, vectors(5, 16))
    np.testing.assert_array_equal(Quantizer.load(good).calibration, vectors(5, 16))
    assert Quantizer.load(None).calibration is None
    one_row = tmp_path / "one.npy"
    np.save(one_row, vectors(1, 16))
    with pytest.raises(CalibrationError, match=r"\(n >= 2, hidden size\)"):
        Quantizer.load(one_row)
    with pytest.raises(CalibrationError, match="cannot read"):
        Quantizer.load(tmp_path / "missing.npy")
    nan = tmp_path / "nan.npy"
    np.save(nan, np.full((3, 4), np.nan, dtype=np.float32))
    with pytest.raises(CalibrationError, match="NaN"):
        Quantizer.load(nan)
