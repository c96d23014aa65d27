"""Per row of a batch of scores, the k best classes and their scores.

    indices, values = top_k(scores, k)     # (rows, k) int32, (rows, k) float32; best first

Equal scores keep the lower index first; NaN ranks below every number (so -inf above NaN); -0.0
and 0.0 are equal. A GPU worker's FP16 plan hands its scores over as float16: those are ranked on
16-bit integer keys that order the same way (half_order_keys), which spares the part thread a
float32 copy of the whole batch, and the values are the float32 of the chosen float16 scores, as
ranking a float32 copy would give.
"""

from __future__ import annotations

import numpy as np

# Up to this k, k rounds of argmax (one fast vectorised pass over the batch each) beat partitioning
# every row; above it, argpartition of the whole batch is cheaper.
_ARGMAX_MAX_K = 16

_HALF_INF_KEY = 0x7C00  # +inf's key; -inf's is its negative, and NaNs' lie beyond them
_NAN_KEY = np.int16(-0x7FFF)  # below every number's key
_STRUCK_KEY = np.int16(-0x8000)  # below NaN's: a class already picked


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k best class indices (int32) and their scores (float32), best first. k is
    clamped to the number of classes."""
    scores = np.asarray(scores)
    if scores.dtype != np.float16 or not 0 < k <= _ARGMAX_MAX_K:
        scores = scores.astype(np.float32, copy=False)
    rows, classes = scores.shape
    k = min(k, classes)
    if rows == 0 or k == 0:
        indices = np.empty((rows, k), np.int64)
    elif scores.dtype == np.float16:
        indices = _top_k_by_argmax_of_keys(half_order_keys(scores), k)
    elif k <= _ARGMAX_MAX_K:
        indices = _top_k_by_argmax(scores, k)
    else:
        indices = _top_k_by_partition(scores, k)
    values = np.take_along_axis(scores, indices, axis=1).astype(np.float32, copy=False)
    return indices.astype(np.int32), values


def half_order_keys(scores: np.ndarray) -> np.ndarray:
    """int16 keys, one per float16 score, that order as the scores rank: a larger score has a
    larger key, equal scores (-0.0 and 0.0 too) equal keys, and every NaN the same key below
    -inf's. A float16's bits read as int16 order the non-negative numbers already; a negative
    number's magnitude bits are flipped (so a larger magnitude gives a smaller key) and it is
    moved up by one (so -0.0 meets 0.0). Integer operations only: numpy has no fast float16 path."""
    bits = np.ascontiguousarray(scores).view(np.int16)
    sign = bits >> 15  # -1 for a negative score, else 0
    keys = (bits ^ (sign & np.int16(0x7FFF))) - sign
    nan = np.abs(keys) > _HALF_INF_KEY
    if nan.any():
        keys[nan] = _NAN_KEY
    return keys


def _argmax_rounds(remaining: np.ndarray, k: int, struck) -> tuple[np.ndarray, np.ndarray]:
    """k rounds of argmax over `remaining` (written into: pass a copy), each striking out the
    class it picked with `struck`. argmax returns the first of equal maxima, so ties go to the
    lower index. Returns the picks, best first, and per row whether every pick was above `struck`."""
    rows = np.arange(len(remaining))
    indices = np.empty((len(remaining), k), np.int64)
    above = np.ones(len(remaining), bool)
    for place in range(k):
        best = remaining.argmax(axis=1)
        above &= remaining[rows, best] > struck
        indices[:, place] = best
        remaining[rows, best] = struck
    return indices, above


def _top_k_by_argmax_of_keys(keys: np.ndarray, k: int) -> np.ndarray:
    """Argmax rounds over the keys, striking out with a key below every score's (NaN's included),
    so no row needs sorting in full."""
    return _argmax_rounds(keys, k, _STRUCK_KEY)[0]


def _top_k_by_argmax(scores: np.ndarray, k: int) -> np.ndarray:
    """Argmax rounds over the batch, striking out with -inf. A round whose pick is not above -inf
    means the row has a NaN (argmax picks a NaN first) or is down to -inf scores (where a
    struck-out class could be picked again); only those rows are sorted in full."""
    indices, settled = _argmax_rounds(scores.copy(), k, -np.inf)  # never write into the caller's scores
    _sort_rows_in_full(scores, indices, unsettled=~settled)
    return indices


def _top_k_by_partition(scores: np.ndarray, k: int) -> np.ndarray:
    """argpartition moves each row's k best classes to its end, in no order; sorting those k by
    score, then index, is the answer unless another class ties the k-th best score (the lower index
    must then win, which argpartition does not promise) or the row has a NaN. Only those rows are
    sorted in full."""
    classes = scores.shape[1]
    candidates = np.argpartition(scores, classes - k, axis=1)[:, classes - k:]
    values = np.take_along_axis(scores, candidates, axis=1)
    indices = np.take_along_axis(candidates, np.lexsort((candidates, -values), axis=1), axis=1)
    kth = values.min(axis=1, keepdims=True)  # NaN for a row with a NaN: then no score is >= it
    _sort_rows_in_full(scores, indices, unsettled=np.count_nonzero(scores >= kth, axis=1) != k)
    return indices


def _sort_rows_in_full(scores: np.ndarray, indices: np.ndarray, unsettled: np.ndarray) -> None:
    """The definition itself for the rows a fast path cannot settle: a stable sort of the whole row
    by descending score (NaN sorts last), its first k classes written into indices."""
    rows = np.flatnonzero(unsettled)
    if len(rows):
        indices[rows] = np.argsort(-scores[rows], axis=1, kind="stable")[:, :indices.shape[1]]
