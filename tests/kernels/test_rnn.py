"""RNN, GRU and LSTM kernels against a naive per-row, per-step reference and against onnxruntime."""

import math

import numpy as np
import pytest

from kernels.cpu import CPU_OPS
from kernels.cpu.rnn import gru_7, gru_14, lstm_7, lstm_14, rnn_7, rnn_14
from kernels.registry import KernelError

RNG = np.random.default_rng(0)

# --- naive reference: scalar activations, one batch row and one step at a time, float64 -------------

SCALAR_ACTIVATIONS = {
    "Sigmoid": lambda x, a, b: 1.0 / (1.0 + math.exp(-x)),
    "Tanh": lambda x, a, b: math.tanh(x),
    "Relu": lambda x, a, b: max(0.0, x),
    "Affine": lambda x, a, b: a * x + b,
    "LeakyRelu": lambda x, a, b: x if x >= 0 else a * x,
    "ThresholdedRelu": lambda x, a, b: x if x >= a else 0.0,
    "ScaledTanh": lambda x, a, b: a * math.tanh(b * x),
    "HardSigmoid": lambda x, a, b: min(max(a * x + b, 0.0), 1.0),
    "Elu": lambda x, a, b: x if x >= 0 else a * (math.exp(x) - 1.0),
    "Softsign": lambda x, a, b: x / (1.0 + abs(x)),
    "Softplus": lambda x, a, b: math.log(1.0 + math.exp(x)),
}


def act(spec, v, clip=None):
    name, a, b = spec
    fn = SCALAR_ACTIVATIONS[name]
    if clip is not None:
        v = np.clip(v, -clip, clip)
    return np.array([fn(float(x), a, b) for x in v])


def ref_run(cell, x, num_dirs, lens, states0):
    """Drive `cell(d, x_t, states) -> states` (states[0] is h) per direction and row over its own length."""
    seq, batch, _ = x.shape
    hidden = states0[0].shape[-1]
    y = np.zeros((seq, num_dirs, batch, hidden))
    finals = [np.zeros((num_dirs, batch, hidden)) for _ in states0]
    for d in range(num_dirs):
        reverse = num_dirs == 1 and cell.reverse or d == 1
        for row in range(batch):
            length = seq if lens is None else int(lens[row])
            steps = range(length - 1, -1, -1) if reverse else range(length)
            states = [s[d, row].astype(np.float64) for s in states0]
            for t in steps:
                states = cell(d, x[t, row].astype(np.float64), states)
                y[t, d, row] = states[0]
            if length > 0:  # a row of length 0 ends with zero states
                for final, state in zip(finals, states):
                    final[d, row] = state
    return (y, *finals)


class RefRNN:
    def __init__(self, w, r, b, acts, clip, reverse):
        self.w, self.r, self.b, self.acts, self.clip, self.reverse = w, r, b, acts, clip, reverse

    def __call__(self, d, x, states):
        (h,) = states
        n = self.r.shape[-1]
        pre = self.w[d] @ x + self.r[d] @ h + self.b[d, :n] + self.b[d, n:]
        return [act(self.acts[d][0], pre, self.clip)]


class RefGRU:
    def __init__(self, w, r, b, acts, clip, reverse, linear_before_reset):
        self.w, self.r, self.b, self.acts, self.clip, self.reverse = w, r, b, acts, clip, reverse
        self.lbr = linear_before_reset

    def __call__(self, d, x, states):
        (h,) = states
        n = self.r.shape[-1]
        w, r, wb, rb = self.w[d], self.r[d], self.b[d, : 3 * n], self.b[d, 3 * n :]
        f, g = self.acts[d]
        rows = [slice(k * n, (k + 1) * n) for k in range(3)]  # z, r, h

        def gate(k):
            return w[rows[k]] @ x + r[rows[k]] @ h + wb[rows[k]] + rb[rows[k]]

        z = act(f, gate(0), self.clip)
        rr = act(f, gate(1), self.clip)
        if self.lbr:
            pre = w[2 * n :] @ x + wb[2 * n :] + rr * (r[2 * n :] @ h + rb[2 * n :])
        else:
            pre = w[2 * n :] @ x + wb[2 * n :] + r[2 * n :] @ (rr * h) + rb[2 * n :]
        h_tilde = act(g, pre, self.clip)
        return [(1 - z) * h_tilde + z * h]


class RefLSTM:
    def __init__(self, w, r, b, p, acts, clip, reverse, input_forget):
        self.w, self.r, self.b, self.p, self.acts, self.clip, self.reverse = w, r, b, p, acts, clip, reverse
        self.input_forget = input_forget

    def __call__(self, d, x, states):
        h, c = states
        n = self.r.shape[-1]
        f, g, hf = self.acts[d]
        pre = self.w[d] @ x + self.r[d] @ h + self.b[d, : 4 * n] + self.b[d, 4 * n :]
        pi, po, pf = self.p[d, :n], self.p[d, n : 2 * n], self.p[d, 2 * n :]
        i = act(f, pre[:n] + pi * c, self.clip)
        forget = 1 - i if self.input_forget else act(f, pre[2 * n : 3 * n] + pf * c, self.clip)
        cell = act(g, pre[3 * n :], self.clip)
        c_new = forget * c + i * cell
        o = act(f, pre[n : 2 * n] + po * c_new, self.clip)
        return [o * act(hf, c_new), c_new]


# --- helpers ------------------------------------------------------------------------------------------


def random_case(gates, num_dirs, seq=4, batch=3, inp=2, hidden=3, dtype=np.float32):
    def rnd(*shape):
        return RNG.standard_normal(shape).astype(dtype)

    return dict(
        x=rnd(seq, batch, inp), w=rnd(num_dirs, gates * hidden, inp), r=rnd(num_dirs, gates * hidden, hidden),
        b=rnd(num_dirs, 2 * gates * hidden), h0=rnd(num_dirs, batch, hidden), c0=rnd(num_dirs, batch, hidden),
        p=rnd(num_dirs, 3 * hidden),
    )


DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}


def check(got, expected, rtol=1e-5, atol=1e-5):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        np.testing.assert_allclose(g.astype(np.float64), e, rtol=rtol, atol=atol)


# --- against the naive reference ---------------------------------------------------------------------


@pytest.mark.parametrize("direction", list(DIRECTIONS))
@pytest.mark.parametrize("lens", [None, [4, 2, 1]])
def test_lstm_matches_reference(direction, lens):
    d = DIRECTIONS[direction]
    c = random_case(4, d)
    lens_arr = None if lens is None else np.array(lens, np.int32)
    acts = [[("Sigmoid", 0, 0), ("Tanh", 0, 0), ("Tanh", 0, 0)]] * d
    ref = RefLSTM(c["w"], c["r"], c["b"], c["p"], acts, None, direction == "reverse", False)
    expected = ref_run(ref, c["x"], d, lens_arr, [c["h0"], c["c0"]])
    got = lstm_14(c["x"], c["w"], c["r"], c["b"], lens_arr, c["h0"], c["c0"], c["p"], direction=direction,
                  hidden_size=3)
    assert all(g.dtype == np.float32 for g in got)
    check(got, expected)


@pytest.mark.parametrize("direction", list(DIRECTIONS))
@pytest.mark.parametrize("linear_before_reset", [0, 1])
def test_gru_matches_reference(direction, linear_before_reset):
    d = DIRECTIONS[direction]
    c = random_case(3, d)
    lens = np.array([3, 4, 1], np.int32)
    acts = [[("Sigmoid", 0, 0), ("Tanh", 0, 0)]] * d
    ref = RefGRU(c["w"], c["r"], c["b"], acts, None, direction == "reverse", linear_before_reset)
    expected = ref_run(ref, c["x"], d, lens, [c["h0"]])
    got = gru_14(c["x"], c["w"], c["r"], c["b"], lens, c["h0"], direction=direction, hidden_size=3,
                 linear_before_reset=linear_before_reset)
    assert all(g.dtype == np.float32 for g in got)
    check(got, expected)


@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_rnn_matches_reference(direction):
    d = DIRECTIONS[direction]
    c = random_case(1, d)
    lens = np.array([2, 4, 3], np.int32)
    ref = RefRNN(c["w"], c["r"], c["b"], [[("Tanh", 0, 0)]] * d, None, direction == "reverse")
    expected = ref_run(ref, c["x"], d, lens, [c["h0"]])
    check(rnn_14(c["x"], c["w"], c["r"], c["b"], lens, c["h0"], direction=direction), expected)


def test_defaults_without_optional_inputs():
    """No B, no initial states, no hidden_size attribute: zeros and R's shape stand in."""
    c = random_case(4, 1)
    zeros = np.zeros_like(c["h0"])
    acts = [[("Sigmoid", 0, 0), ("Tanh", 0, 0), ("Tanh", 0, 0)]]
    ref = RefLSTM(c["w"], c["r"], np.zeros_like(c["b"]), np.zeros_like(c["p"]), acts, None, False, False)
    check(lstm_7(c["x"], c["w"], c["r"]), ref_run(ref, c["x"], 1, None, [zeros, zeros]))


def test_lstm_peepholes_input_forget_and_clip():
    c = random_case(4, 2)
    c["x"] *= 3  # push pre-activations past the clip
    acts = [[("Sigmoid", 0, 0), ("Tanh", 0, 0), ("Tanh", 0, 0)]] * 2
    ref = RefLSTM(c["w"], c["r"], c["b"], c["p"], acts, 0.5, False, True)
    lens = np.array([4, 3, 2], np.int32)
    expected = ref_run(ref, c["x"], 2, lens, [c["h0"], c["c0"]])
    got = lstm_7(c["x"], c["w"], c["r"], c["b"], lens, c["h0"], c["c0"], c["p"], direction="bidirectional",
                 clip=0.5, input_forget=1)
    check(got, expected)
    unclipped = lstm_7(c["x"], c["w"], c["r"], c["b"], lens, c["h0"], c["c0"], c["p"], direction="bidirectional",
                       input_forget=1)
    assert not np.allclose(unclipped[0], got[0])  # the clip did something


@pytest.mark.parametrize("name", sorted(SCALAR_ACTIVATIONS))
def test_each_activation(name):
    """RNN with f = each activation, explicit alpha/beta for the ones that take them."""
    c = random_case(1, 1)
    alpha, beta = 0.7, 0.3
    ref = RefRNN(c["w"], c["r"], c["b"], [[(name, alpha, beta)]], None, False)
    expected = ref_run(ref, c["x"], 1, None, [c["h0"]])
    got = rnn_14(c["x"], c["w"], c["r"], c["b"], None, c["h0"], activations=[name], activation_alpha=[alpha],
                 activation_beta=[beta])
    check(got, expected)


def test_activation_alpha_beta_consumed_in_order_with_defaults():
    """alphas go to the activations that take one, in order; an exhausted list gives the op default."""
    c = random_case(4, 2)
    names = ["HardSigmoid", "Tanh", "LeakyRelu", "Affine", "Elu", "ScaledTanh"]
    alphas, betas = [0.3, 0.05, 0.9], [0.4]
    acts = [
        [("HardSigmoid", 0.3, 0.4), ("Tanh", 0, 0), ("LeakyRelu", 0.05, 0)],
        [("Affine", 0.9, 0.0), ("Elu", 1.0, 0), ("ScaledTanh", 1.0, 1.0)],
    ]
    ref = RefLSTM(c["w"], c["r"], c["b"], c["p"], acts, None, False, False)
    expected = ref_run(ref, c["x"], 2, None, [c["h0"], c["c0"]])
    got = lstm_14(c["x"], c["w"], c["r"], c["b"], None, c["h0"], c["c0"], c["p"], direction="bidirectional",
                  activations=names, activation_alpha=alphas, activation_beta=betas)
    check(got, expected)


def test_activation_names_are_case_insensitive():
    c = random_case(3, 1)
    a = gru_7(c["x"], c["w"], c["r"], c["b"], activations=["sigmoid", "TANH"])
    b = gru_7(c["x"], c["w"], c["r"], c["b"])
    check(a, [np.asarray(v, np.float64) for v in b], rtol=0, atol=0)


# --- sequence lengths, layout, dtypes ----------------------------------------------------------------


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_outputs_past_sequence_end_are_zero(direction):
    c = random_case(4, 1, seq=5)
    lens = np.array([5, 2, 0], np.int32)
    y, y_h, y_c = lstm_14(c["x"], c["w"], c["r"], c["b"], lens, c["h0"], c["c0"], direction=direction)
    assert np.all(y[2:, :, 1] == 0) and np.all(y[:, :, 2] == 0)
    assert np.all(y[:, :, 0] != 0)
    assert np.all(y_h[:, 2] == 0) and np.all(y_c[:, 2] == 0)
    last = 1 if direction == "forward" else 0  # the row of length 2 ends at step 1 forward, step 0 reverse
    np.testing.assert_array_equal(y_h[0, 1], y[last, 0, 1])


def test_full_sequence_lens_equals_none():
    c = random_case(3, 2)
    full = np.full(3, 4, np.int32)
    a = gru_14(c["x"], c["w"], c["r"], c["b"], full, c["h0"], direction="bidirectional")
    b = gru_14(c["x"], c["w"], c["r"], c["b"], None, c["h0"], direction="bidirectional")
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("fn, gates, states", [(lstm_14, 4, 2), (gru_14, 3, 1), (rnn_14, 1, 1)])
def test_layout_1_is_batch_first(fn, gates, states):
    c = random_case(gates, 2)
    lens = np.array([4, 1, 3], np.int32)
    initial = [c["h0"], c["c0"]][:states]
    extra = [c["p"]] if fn is lstm_14 else []
    seq_first = fn(c["x"], c["w"], c["r"], c["b"], lens, *initial, *extra, direction="bidirectional")
    batch_first = fn(c["x"].transpose(1, 0, 2), c["w"], c["r"], c["b"], lens,
                     *[s.transpose(1, 0, 2) for s in initial], *extra, direction="bidirectional", layout=1)
    np.testing.assert_allclose(batch_first[0], seq_first[0].transpose(2, 0, 1, 3), rtol=1e-6, atol=1e-7)
    for bf, sf in zip(batch_first[1:], seq_first[1:]):
        np.testing.assert_allclose(bf, sf.transpose(1, 0, 2), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_dtype_preserved(dtype):
    c = random_case(4, 1, dtype=dtype)
    got = lstm_14(c["x"], c["w"], c["r"], c["b"], None, c["h0"], c["c0"])
    assert [g.dtype for g in got] == [np.dtype(dtype)] * 3
    acts = [[("Sigmoid", 0, 0), ("Tanh", 0, 0), ("Tanh", 0, 0)]]
    ref = RefLSTM(c["w"], c["r"], c["b"], np.zeros((1, 9)), acts, None, False, False)
    tol = 5e-3 if dtype == np.float16 else 1e-12
    check(got, ref_run(ref, c["x"], 1, None, [c["h0"], c["c0"]]), rtol=tol, atol=tol)


def test_versions_registered():
    assert CPU_OPS.versions("LSTM") == [7, 14]
    assert CPU_OPS.versions("GRU") == [7, 14]
    assert CPU_OPS.versions("RNN") == [7, 14]
    assert CPU_OPS.lookup("LSTM", 13).fn is lstm_7
    assert CPU_OPS.lookup("GRU", 22).fn is gru_14
    assert CPU_OPS.lookup("RNN", 9).fn is rnn_7


# --- errors ------------------------------------------------------------------------------------------


def test_bad_weight_shapes():
    c = random_case(4, 1)
    with pytest.raises(KernelError, match=r"W has shape \(1, 12, 2\)"):
        lstm_14(c["x"], c["w"], c["r"], direction="bidirectional")
    with pytest.raises(KernelError, match="W has shape"):
        lstm_14(c["x"][..., :1], c["w"], c["r"])  # input size 1 vs W's 2
    with pytest.raises(KernelError, match="R has shape"):
        lstm_14(c["x"], c["w"], c["r"][..., :2], hidden_size=3)
    with pytest.raises(KernelError, match="B has shape"):
        lstm_14(c["x"], c["w"], c["r"], c["b"][:, :-1])
    with pytest.raises(KernelError, match="P has shape"):
        lstm_14(c["x"], c["w"], c["r"], c["b"], None, None, None, c["p"][:, :3])
    with pytest.raises(KernelError, match="initial_h has shape"):
        lstm_14(c["x"], c["w"], c["r"], c["b"], None, c["h0"][:, :2])
    with pytest.raises(KernelError, match="X must be 3-D"):
        gru_14(c["x"][0], c["w"][:, :9], c["r"][:, :9])


def test_bad_attributes():
    c = random_case(3, 1)
    with pytest.raises(KernelError, match="direction"):
        gru_14(c["x"], c["w"], c["r"], direction="sideways")
    with pytest.raises(KernelError, match="layout"):
        gru_14(c["x"], c["w"], c["r"], layout=2)
    with pytest.raises(KernelError, match="unsupported activation 'Gelu'"):
        gru_14(c["x"], c["w"], c["r"], activations=["Sigmoid", "Gelu"])
    with pytest.raises(KernelError, match="2 activations per direction"):
        gru_14(c["x"], c["w"], c["r"], activations=["Sigmoid", "Tanh", "Tanh"])


def test_bad_sequence_lens():
    c = random_case(1, 1)
    with pytest.raises(KernelError, match=r"must lie in \[0, 4\]"):
        rnn_14(c["x"], c["w"], c["r"], None, np.array([1, 5, 2], np.int32))
    with pytest.raises(KernelError, match=r"expected \(3,\)"):
        rnn_14(c["x"], c["w"], c["r"], None, np.array([1, 2], np.int32))


# --- against onnxruntime -----------------------------------------------------------------------------


def run_onnxruntime(op_type, inputs, attrs, num_outputs, opset=14):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    names = ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"][: len(inputs)]
    node = helper.make_node(op_type, [n if v is not None else "" for n, v in zip(names, inputs)],
                            ["Y", "Y_h", "Y_c"][:num_outputs], **attrs)
    feeds = {n: v for n, v in zip(names, inputs) if v is not None}
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(n, TensorProto.INT32 if n == "sequence_lens" else TensorProto.FLOAT, v.shape)
         for n, v in feeds.items()],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in node.output],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


@pytest.mark.parametrize("direction", ["reverse", "bidirectional"])
def test_lstm_matches_onnxruntime(direction):
    # onnxruntime's CPU RNNs reject layout=1; test_layout_1_is_batch_first covers that.
    d = DIRECTIONS[direction]
    c = random_case(4, d, seq=5, batch=4)
    lens = np.array([5, 3, 0, 1], np.int32)
    inputs = [c["x"], c["w"], c["r"], c["b"], lens, c["h0"], c["c0"], c["p"]]
    attrs = dict(direction=direction, hidden_size=3, clip=1.5,
                 activations=["HardSigmoid", "Tanh", "Softsign"] * d, activation_alpha=[0.3] * d,
                 activation_beta=[0.45] * d)
    check(lstm_14(*inputs, **attrs), run_onnxruntime("LSTM", inputs, attrs, 3), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
@pytest.mark.parametrize("linear_before_reset", [0, 1])
def test_gru_matches_onnxruntime(direction, linear_before_reset):
    d = DIRECTIONS[direction]
    c = random_case(3, d, seq=5, batch=4)
    inputs = [c["x"], c["w"], c["r"], c["b"], np.array([2, 5, 0, 4], np.int32), c["h0"]]
    attrs = dict(direction=direction, hidden_size=3, linear_before_reset=linear_before_reset)
    check(gru_14(*inputs, **attrs), run_onnxruntime("GRU", inputs, attrs, 2), rtol=1e-5, atol=1e-6)


def test_rnn_matches_onnxruntime():
    c = random_case(1, 2, seq=5, batch=4)
    inputs = [c["x"], c["w"], c["r"], c["b"], np.array([2, 5, 1, 4], np.int32), c["h0"]]
    attrs = dict(direction="bidirectional", hidden_size=3, activations=["Relu", "LeakyRelu"],
                 activation_alpha=[0.2])
    check(rnn_14(*inputs, **attrs), run_onnxruntime("RNN", inputs, attrs, 2), rtol=1e-5, atol=1e-6)
