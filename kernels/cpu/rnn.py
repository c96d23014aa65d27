"""Recurrent layers: RNN, GRU and LSTM, per the ONNX spec.

All three share one shape: the input projection X @ W^T (+ Wb) is computed for every time step in one
matmul, then a Python loop over time steps does the recurrent part (H @ R^T and the gates) for the
whole batch at once. Directions run one after the other.

Sequence lengths: a batch row is "active" at step t when t < sequence_lens[row]. Inactive rows keep
their state and write zeros to Y. Running the reverse direction from the last step down with the same
mask starts each row at its own last valid step, so one mask serves both directions, and the final
state of each row is its state after its last valid step. A row of length 0 gets zero final states
(as onnxruntime does).

clip bounds the pre-activation of every gate (onnxruntime does not clip the LSTM cell state fed to h,
and neither do we).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from kernels.cpu._registry import op
from kernels.registry import KernelError

_DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}


# --- activation functions ---------------------------------------------------------------------------


def _sigmoid(x, alpha, beta):
    # Split by sign so exp never overflows.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _softplus(x, alpha, beta):
    # log(1 + e^x) = max(x, 0) + log1p(e^-|x|), stable for large |x|.
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


# name (lower case) -> (function(x, alpha, beta), uses alpha, uses beta, default alpha, default beta).
# Defaults are those of the matching standalone ONNX operators.
_ACTIVATIONS: dict[str, tuple[Callable, bool, bool, float, float]] = {
    "sigmoid": (_sigmoid, False, False, 0.0, 0.0),
    "tanh": (lambda x, a, b: np.tanh(x), False, False, 0.0, 0.0),
    "relu": (lambda x, a, b: np.maximum(x, 0), False, False, 0.0, 0.0),
    "affine": (lambda x, a, b: a * x + b, True, True, 1.0, 0.0),
    "leakyrelu": (lambda x, a, b: np.where(x >= 0, x, a * x), True, False, 0.01, 0.0),
    "thresholdedrelu": (lambda x, a, b: np.where(x >= a, x, 0), True, False, 1.0, 0.0),
    "scaledtanh": (lambda x, a, b: a * np.tanh(b * x), True, True, 1.0, 1.0),
    "hardsigmoid": (lambda x, a, b: np.clip(a * x + b, 0, 1), True, True, 0.2, 0.5),
    "elu": (lambda x, a, b: np.where(x >= 0, x, a * np.expm1(np.minimum(x, 0))), True, False, 1.0, 0.0),
    "softsign": (lambda x, a, b: x / (1 + np.abs(x)), False, False, 0.0, 0.0),
    "softplus": (_softplus, False, False, 0.0, 0.0),
}


@dataclasses.dataclass(frozen=True)
class _Activation:
    fn: Callable
    alpha: float
    beta: float

    def __call__(self, x: np.ndarray) -> np.ndarray:
        # alpha/beta as x's dtype so float32 stays float32.
        return self.fn(x, x.dtype.type(self.alpha), x.dtype.type(self.beta)).astype(x.dtype, copy=False)


def _activations(op_type, names, alphas, betas, defaults, num_directions) -> list[list[_Activation]]:
    """One list of activations per direction.

    alpha and beta values are consumed in order by the activations that take them; an activation that
    finds its list used up gets its operator's default.
    """
    per_direction = len(defaults)
    if names is None:
        names = list(defaults) * num_directions
    names = list(names)
    if len(names) == per_direction and num_directions == 2:
        names = names * 2  # one set given for both directions
    if len(names) != per_direction * num_directions:
        raise KernelError(
            f"{op_type} takes {per_direction} activations per direction ({num_directions} direction(s)), "
            f"got {len(names)}: {names}"
        )
    alphas = list(alphas or [])
    betas = list(betas or [])
    result = []
    for name in names:
        key = str(name).lower()
        if key not in _ACTIVATIONS:
            raise KernelError(f"{op_type}: unsupported activation '{name}'; supported: {sorted(_ACTIVATIONS)}")
        fn, uses_alpha, uses_beta, alpha, beta = _ACTIVATIONS[key]
        if uses_alpha and alphas:
            alpha = alphas.pop(0)
        if uses_beta and betas:
            beta = betas.pop(0)
        result.append(_Activation(fn, float(alpha), float(beta)))
    return [result[d * per_direction : (d + 1) * per_direction] for d in range(num_directions)]


# --- shared plumbing --------------------------------------------------------------------------------


def _compute_dtype(dtype: np.dtype) -> np.dtype:
    """float32/float64 compute in their own type; narrower floats in float32."""
    return dtype if dtype in (np.dtype(np.float32), np.dtype(np.float64)) else np.dtype(np.float32)


@dataclasses.dataclass
class _Setup:
    """Validated inputs of one recurrent node, seq-major ([seq, batch, ...]) and in the compute dtype."""

    x: np.ndarray  # [seq, batch, input]
    w: np.ndarray  # [num_dir, gates*hidden, input]
    r: np.ndarray  # [num_dir, gates*hidden, hidden]
    wb: np.ndarray  # [num_dir, gates*hidden]
    rb: np.ndarray  # [num_dir, gates*hidden]
    lengths: np.ndarray | None  # [batch] int64, None when every row runs the full sequence
    initial_h: np.ndarray  # [num_dir, batch, hidden]
    hidden: int
    num_directions: int
    reverse_first: bool  # direction == "reverse": the only direction runs backwards
    out_dtype: np.dtype
    layout: int

    @property
    def seq_len(self) -> int:
        return self.x.shape[0]

    @property
    def batch(self) -> int:
        return self.x.shape[1]

    def is_reverse(self, d: int) -> bool:
        return self.reverse_first or d == 1

    def active_mask(self, t: int) -> np.ndarray | None:
        """[batch, 1] bool: which rows are still inside their sequence at step t (None: all)."""
        if self.lengths is None:
            return None
        return (t < self.lengths)[:, None]


def _state_input(name, value, layout, num_directions, batch, hidden, dtype):
    """An initial state in [num_dir, batch, hidden] (layout 1 gives [batch, num_dir, hidden])."""
    if value is None:
        return np.zeros((num_directions, batch, hidden), dtype)
    if layout == 1 and value.ndim == 3:
        value = value.transpose(1, 0, 2)
    if value.shape != (num_directions, batch, hidden):
        raise KernelError(
            f"{name} has shape {value.shape}; expected {(num_directions, batch, hidden)} "
            f"(num_directions, batch, hidden){' in layout 0' if layout == 1 else ''}"
        )
    return value.astype(dtype, copy=False)


def _setup(op_type, gates, x, w, r, b, sequence_lens, initial_h, direction, hidden_size, layout) -> _Setup:
    if direction not in _DIRECTIONS:
        raise KernelError(f"{op_type}: direction must be one of {sorted(_DIRECTIONS)}, got '{direction}'")
    if layout not in (0, 1):
        raise KernelError(f"{op_type}: layout must be 0 or 1, got {layout}")
    num_directions = _DIRECTIONS[direction]
    if x.ndim != 3:
        raise KernelError(f"{op_type}: X must be 3-D, got shape {x.shape}")
    if layout == 1:
        x = x.transpose(1, 0, 2)
    seq_len, batch, input_size = x.shape
    if r.ndim != 3:
        raise KernelError(f"{op_type}: R must be 3-D, got shape {r.shape}")
    hidden = r.shape[2] if hidden_size is None else int(hidden_size)
    if w.shape != (num_directions, gates * hidden, input_size):
        raise KernelError(
            f"{op_type}: W has shape {w.shape}; expected {(num_directions, gates * hidden, input_size)} "
            f"(num_directions={num_directions}, {gates}*hidden_size, input_size of X {x.shape})"
        )
    if r.shape != (num_directions, gates * hidden, hidden):
        raise KernelError(
            f"{op_type}: R has shape {r.shape}; expected {(num_directions, gates * hidden, hidden)} "
            f"(num_directions={num_directions}, {gates}*hidden_size, hidden_size={hidden})"
        )
    out_dtype = x.dtype
    dtype = _compute_dtype(out_dtype)
    if b is None:
        b = np.zeros((num_directions, 2 * gates * hidden), dtype)
    if b.shape != (num_directions, 2 * gates * hidden):
        raise KernelError(f"{op_type}: B has shape {b.shape}; expected {(num_directions, 2 * gates * hidden)}")
    b = b.astype(dtype, copy=False)
    lengths = None
    if sequence_lens is not None:
        lengths = np.asarray(sequence_lens).astype(np.int64)
        if lengths.shape != (batch,):
            raise KernelError(f"{op_type}: sequence_lens has shape {lengths.shape}; expected ({batch},)")
        if np.any((lengths < 0) | (lengths > seq_len)):
            raise KernelError(f"{op_type}: sequence_lens {lengths.tolist()} must lie in [0, {seq_len}]")
        if np.all(lengths == seq_len):
            lengths = None  # every row is full: skip the masking
    return _Setup(
        x=x.astype(dtype, copy=False),
        w=w.astype(dtype, copy=False),
        r=r.astype(dtype, copy=False),
        wb=b[:, : gates * hidden],
        rb=b[:, gates * hidden :],
        lengths=lengths,
        initial_h=_state_input("initial_h", initial_h, layout, num_directions, batch, hidden, dtype),
        hidden=hidden,
        num_directions=num_directions,
        reverse_first=direction == "reverse",
        out_dtype=out_dtype,
        layout=layout,
    )


def _input_projection(s: _Setup, d: int) -> np.ndarray:
    """X @ W^T + Wb for every step at once: [seq, batch, gates*hidden]."""
    return np.matmul(s.x, s.w[d].T) + s.wb[d]


def _steps(s: _Setup, d: int) -> range:
    return range(s.seq_len - 1, -1, -1) if s.is_reverse(d) else range(s.seq_len)


def _clipper(clip) -> Callable[[np.ndarray], np.ndarray]:
    if clip is None:
        return lambda x: x
    bound = float(clip)
    return lambda x: np.clip(x, x.dtype.type(-bound), x.dtype.type(bound))


def _keep_where_inactive(mask, new, old):
    return new if mask is None else np.where(mask, new, old)


def _final_state(s: _Setup, state: np.ndarray) -> np.ndarray:
    """Rows with sequence length 0 end with a zero state."""
    if s.lengths is None:
        return state
    return np.where((s.lengths > 0)[:, None], state, 0).astype(state.dtype, copy=False)


def _outputs(s: _Setup, y: np.ndarray, *states: np.ndarray) -> tuple:
    """Y [seq, num_dir, batch, hidden] and the final states [num_dir, batch, hidden], in the node's layout."""
    if s.layout == 1:
        y = y.transpose(2, 0, 1, 3)
        states = tuple(h.transpose(1, 0, 2) for h in states)
    return (np.ascontiguousarray(y).astype(s.out_dtype, copy=False),) + tuple(
        np.ascontiguousarray(h).astype(s.out_dtype, copy=False) for h in states
    )


# --- RNN --------------------------------------------------------------------------------------------


def _rnn(x, w, r, b, sequence_lens, initial_h, *, activation_alpha, activation_beta, activations, clip,
         direction, hidden_size, layout):
    s = _setup("RNN", 1, x, w, r, b, sequence_lens, initial_h, direction, hidden_size, layout)
    acts = _activations("RNN", activations, activation_alpha, activation_beta, ("Tanh",), s.num_directions)
    clipped = _clipper(clip)
    y = np.zeros((s.seq_len, s.num_directions, s.batch, s.hidden), s.x.dtype)
    final_h = np.empty((s.num_directions, s.batch, s.hidden), s.x.dtype)
    for d in range(s.num_directions):
        (f,) = acts[d]
        xw = _input_projection(s, d) + s.rb[d]
        r_t = s.r[d].T
        h = s.initial_h[d]
        for t in _steps(s, d):
            mask = s.active_mask(t)
            h_new = f(clipped(xw[t] + h @ r_t))
            h = _keep_where_inactive(mask, h_new, h)
            y[t, d] = h_new if mask is None else np.where(mask, h_new, 0)
        final_h[d] = _final_state(s, h)
    return _outputs(s, y, final_h)


@op("RNN", since=7)
def rnn_7(x, w, r, b=None, sequence_lens=None, initial_h=None, *, activation_alpha=None, activation_beta=None,
          activations=None, clip=None, direction="forward", hidden_size=None):
    """Simple RNN: Ht = f(Xt W^T + Ht-1 R^T + Wb + Rb), f defaults to Tanh. Returns (Y, Y_h)."""
    return _rnn(x, w, r, b, sequence_lens, initial_h, activation_alpha=activation_alpha,
                activation_beta=activation_beta, activations=activations, clip=clip, direction=direction,
                hidden_size=hidden_size, layout=0)


@op("RNN", since=14)
def rnn_14(x, w, r, b=None, sequence_lens=None, initial_h=None, *, activation_alpha=None, activation_beta=None,
           activations=None, clip=None, direction="forward", hidden_size=None, layout=0):
    """RNN-7 plus `layout` (1: X, Y, initial_h and Y_h are batch-first)."""
    return _rnn(x, w, r, b, sequence_lens, initial_h, activation_alpha=activation_alpha,
                activation_beta=activation_beta, activations=activations, clip=clip, direction=direction,
                hidden_size=hidden_size, layout=layout)


# --- GRU --------------------------------------------------------------------------------------------


def _gru(x, w, r, b, sequence_lens, initial_h, *, activation_alpha, activation_beta, activations, clip,
         direction, hidden_size, linear_before_reset, layout):
    s = _setup("GRU", 3, x, w, r, b, sequence_lens, initial_h, direction, hidden_size, layout)
    acts = _activations("GRU", activations, activation_alpha, activation_beta, ("Sigmoid", "Tanh"),
                        s.num_directions)
    clipped = _clipper(clip)
    n = s.hidden
    y = np.zeros((s.seq_len, s.num_directions, s.batch, n), s.x.dtype)
    final_h = np.empty((s.num_directions, s.batch, n), s.x.dtype)
    for d in range(s.num_directions):
        f, g = acts[d]
        xw = _input_projection(s, d)  # gates z, r, h
        # Rb of z and r joins their input projection; Rbh's place depends on linear_before_reset.
        xw[..., : 2 * n] += s.rb[d, : 2 * n]
        rbh = s.rb[d, 2 * n :]
        r_zr_t = s.r[d, : 2 * n].T
        r_h_t = s.r[d, 2 * n :].T
        h = s.initial_h[d]
        for t in _steps(s, d):
            mask = s.active_mask(t)
            zr = f(clipped(xw[t, :, : 2 * n] + h @ r_zr_t))
            z, reset = zr[:, :n], zr[:, n:]
            if linear_before_reset:
                candidate = xw[t, :, 2 * n :] + reset * (h @ r_h_t + rbh)
            else:
                candidate = xw[t, :, 2 * n :] + (reset * h) @ r_h_t + rbh
            h_tilde = g(clipped(candidate))
            h_new = (1 - z) * h_tilde + z * h
            h = _keep_where_inactive(mask, h_new, h)
            y[t, d] = h_new if mask is None else np.where(mask, h_new, 0)
        final_h[d] = _final_state(s, h)
    return _outputs(s, y, final_h)


@op("GRU", since=7)
def gru_7(x, w, r, b=None, sequence_lens=None, initial_h=None, *, activation_alpha=None, activation_beta=None,
          activations=None, clip=None, direction="forward", hidden_size=None, linear_before_reset=0):
    """GRU with gates in W/R/B order z, r, h; f=Sigmoid, g=Tanh by default. Returns (Y, Y_h)."""
    return _gru(x, w, r, b, sequence_lens, initial_h, activation_alpha=activation_alpha,
                activation_beta=activation_beta, activations=activations, clip=clip, direction=direction,
                hidden_size=hidden_size, linear_before_reset=linear_before_reset, layout=0)


@op("GRU", since=14)
def gru_14(x, w, r, b=None, sequence_lens=None, initial_h=None, *, activation_alpha=None, activation_beta=None,
           activations=None, clip=None, direction="forward", hidden_size=None, layout=0, linear_before_reset=0):
    """GRU-7 plus `layout` (1: X, Y, initial_h and Y_h are batch-first)."""
    return _gru(x, w, r, b, sequence_lens, initial_h, activation_alpha=activation_alpha,
                activation_beta=activation_beta, activations=activations, clip=clip, direction=direction,
                hidden_size=hidden_size, linear_before_reset=linear_before_reset, layout=layout)


# --- LSTM -------------------------------------------------------------------------------------------


def _lstm(x, w, r, b, sequence_lens, initial_h, initial_c, p, *, activation_alpha, activation_beta, activations,
          clip, direction, hidden_size, input_forget, layout):
    s = _setup("LSTM", 4, x, w, r, b, sequence_lens, initial_h, direction, hidden_size, layout)
    acts = _activations("LSTM", activations, activation_alpha, activation_beta, ("Sigmoid", "Tanh", "Tanh"),
                        s.num_directions)
    n = s.hidden
    initial_c = _state_input("initial_c", initial_c, layout, s.num_directions, s.batch, n, s.x.dtype)
    if p is None:
        p = np.zeros((s.num_directions, 3 * n), s.x.dtype)
    if p.shape != (s.num_directions, 3 * n):
        raise KernelError(f"LSTM: P has shape {p.shape}; expected {(s.num_directions, 3 * n)}")
    p = p.astype(s.x.dtype, copy=False)
    clipped = _clipper(clip)
    y = np.zeros((s.seq_len, s.num_directions, s.batch, n), s.x.dtype)
    final_h = np.empty((s.num_directions, s.batch, n), s.x.dtype)
    final_c = np.empty_like(final_h)
    for d in range(s.num_directions):
        f, g, h_act = acts[d]
        p_i, p_o, p_f = p[d, :n], p[d, n : 2 * n], p[d, 2 * n :]
        xw = _input_projection(s, d) + s.rb[d]  # gates i, o, f, c
        r_t = s.r[d].T
        h, c = s.initial_h[d], initial_c[d]
        for t in _steps(s, d):
            mask = s.active_mask(t)
            gates = xw[t] + h @ r_t
            i = f(clipped(gates[:, :n] + p_i * c))
            if input_forget:
                forget = 1 - i  # coupled input and forget gates
            else:
                forget = f(clipped(gates[:, 2 * n : 3 * n] + p_f * c))
            cell = g(clipped(gates[:, 3 * n :]))
            c_new = forget * c + i * cell
            o = f(clipped(gates[:, n : 2 * n] + p_o * c_new))
            h_new = o * h_act(c_new)
            h = _keep_where_inactive(mask, h_new, h)
            c = _keep_where_inactive(mask, c_new, c)
            y[t, d] = h_new if mask is None else np.where(mask, h_new, 0)
        final_h[d] = _final_state(s, h)
        final_c[d] = _final_state(s, c)
    return _outputs(s, y, final_h, final_c)


@op("LSTM", since=7)
def lstm_7(x, w, r, b=None, sequence_lens=None, initial_h=None, initial_c=None, p=None, *, activation_alpha=None,
           activation_beta=None, activations=None, clip=None, direction="forward", hidden_size=None, input_forget=0):
    """LSTM with gates in W/R/B order i, o, f, c and peepholes P in order i, o, f; f=Sigmoid, g=h=Tanh by
    default. Returns (Y, Y_h, Y_c)."""
    return _lstm(x, w, r, b, sequence_lens, initial_h, initial_c, p, activation_alpha=activation_alpha,
                 activation_beta=activation_beta, activations=activations, clip=clip, direction=direction,
                 hidden_size=hidden_size, input_forget=input_forget, layout=0)


@op("LSTM", since=14)
def lstm_14(x, w, r, b=None, sequence_lens=None, initial_h=None, initial_c=None, p=None, *, activation_alpha=None,
            activation_beta=None, activations=None, clip=None, direction="forward", hidden_size=None, input_forget=0,
            layout=0):
    """LSTM-7 plus `layout` (1: X, Y, initial_h/c and Y_h/c are batch-first)."""
    return _lstm(x, w, r, b, sequence_lens, initial_h, initial_c, p, activation_alpha=activation_alpha,
                 activation_beta=activation_beta, activations=activations, clip=clip, direction=direction,
                 hidden_size=hidden_size, input_forget=input_forget, layout=layout)
