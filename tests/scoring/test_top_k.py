"""scoring.top_k: float16 scores are ranked on integer keys and give what ranking a float32 copy
gives (tests of the float32 paths are in test_outputs.py)."""

import numpy as np
import pytest

from scoring.top_k import half_order_keys, top_k

SPECIALS = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 65504, -65504, 6e-8, -6e-8, 1.0, -1.0],
                    np.float16)


def test_the_keys_order_every_float16_as_its_value_ranks():
    """All 65,536 bit patterns in descending order of value (NaN last): the keys never rise, and two
    neighbours share a key exactly when their values are equal (every NaN counted equal)."""
    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    values = every.astype(np.float64)
    nan = np.isnan(values)
    order = np.lexsort((np.where(nan, 0.0, -values), nan))  # by NaN or not, then by descending value
    keys = half_order_keys(every)[order].astype(np.int64)
    ranked = values[order]
    same = (ranked[1:] == ranked[:-1]) | (nan[order][1:] & nan[order][:-1])
    assert np.all(np.diff(keys) <= 0)
    np.testing.assert_array_equal(np.diff(keys) == 0, same)
    assert nan[order][-1] and keys[-1] < half_order_keys(np.array([-np.inf], np.float16))[0]


@pytest.mark.parametrize("k", [1, 2, 5, 16])
def test_float16_scores_rank_as_their_float32_copy_does(k):
    rng = np.random.default_rng(k)
    scores = rng.standard_normal((300, 40)).astype(np.float16)
    scores[::3] = rng.integers(-2, 3, size=scores[::3].shape)  # ties, also at the k-th place
    scores[1::5, rng.integers(0, 40, 60)] = rng.choice(SPECIALS, 60)  # NaN, infinities, signed zeros
    scores[2] = np.nan
    scores[4] = -np.inf
    scores[6, :20], scores[6, 20:] = -0.0, 0.0
    indices, values = top_k(scores, k)
    want_indices, want_values = top_k(scores.astype(np.float32), k)
    assert indices.dtype == np.int32 and values.dtype == np.float32
    np.testing.assert_array_equal(indices, want_indices)
    np.testing.assert_array_equal(values.view(np.uint32), want_values.view(np.uint32))  # bit for bit


def test_float16_scores_are_left_as_they_were_and_large_k_still_works():
    scores = np.array([[0.5, -0.0, np.nan, 2.0, 0.0]], np.float16)
    kept = scores.copy()
    assert top_k(scores, 5)[0].tolist() == [[3, 0, 1, 4, 2]]
    np.testing.assert_array_equal(scores.view(np.uint16), kept.view(np.uint16))
    wide = np.random.default_rng(0).standard_normal((4, 50)).astype(np.float16)
    np.testing.assert_array_equal(top_k(wide, 20)[0], top_k(wide.astype(np.float32), 20)[0])
    assert top_k(np.zeros((0, 3), np.float16), 2)[0].shape == (0, 2)
