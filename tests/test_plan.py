import json
import struct

import ml_dtypes
import numpy as np
import pytest

from engine.errors import PlanFormatError
from engine.plan import FORMAT_VERSION, MAGIC, Plan, decode_plan, read_plan


def _sample_plan() -> Plan:
    tensors = {
        "w": np.arange(12, dtype=np.float32).reshape(3, 4),
        "half": np.linspace(-1, 1, 5, dtype=np.float16),
        "idx": np.array([[1, -2], [3, 4]], dtype=np.int64),
        "mask": np.array([True, False, True]),
        "scalar": np.array(2.5, dtype=np.float64),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "fp8": np.array([0.5, -2.0, 448.0], dtype=ml_dtypes.float8_e4m3fn),
    }
    return Plan({"model_name": "m", "inputs": [], "outputs": [], "layers": []}, tensors)


def test_round_trip_keeps_every_tensor_and_the_header(tmp_path):
    plan = _sample_plan()
    path = plan.save(tmp_path / "m.plan")
    loaded = read_plan(path)
    assert loaded.header["model_name"] == "m"
    assert set(loaded.tensors) == set(plan.tensors)
    for name, array in plan.tensors.items():
        got = loaded.tensors[name]
        assert got.dtype == array.dtype and got.shape == array.shape, name
        np.testing.assert_array_equal(got.astype(np.float64), array.astype(np.float64))
    assert not list(tmp_path.glob("*.tmp")), "save must not leave its temporary file behind"


def test_header_is_plain_json_and_tensors_are_aligned(tmp_path):
    blob = _sample_plan().to_bytes()
    assert blob[:8] == MAGIC
    _, version, _, header_len, _, _ = struct.unpack_from("<8sIIQQ32s", blob)
    assert version == FORMAT_VERSION
    header = json.loads(blob[64:64 + header_len])
    assert all(entry["offset"] % 64 == 0 for entry in header["tensors"])


def test_truncated_plan_is_named_as_truncated(tmp_path):
    path = tmp_path / "cut.plan"
    path.write_bytes(_sample_plan().to_bytes()[:-10])
    with pytest.raises(PlanFormatError, match=r"cut\.plan.*truncated"):
        read_plan(path)


def test_flipped_byte_is_caught_by_the_checksum(tmp_path):
    blob = bytearray(_sample_plan().to_bytes())
    blob[-3] ^= 0xFF
    with pytest.raises(PlanFormatError, match="corrupted"):
        decode_plan(bytes(blob), "bad.plan")


def test_foreign_files_are_refused_with_a_hint(tmp_path):
    from tests.helpers import tiny_model

    with pytest.raises(PlanFormatError, match="not a batchscore plan.*ONNX model"):
        decode_plan(tiny_model().SerializeToString() + b"\0" * 64, "model.onnx")
    with pytest.raises(PlanFormatError, match="too short"):
        decode_plan(b"hello", "hello.txt")
    with pytest.raises(PlanFormatError, match="no such plan file"):
        read_plan(tmp_path / "missing.plan")


def test_newer_format_version_asks_for_an_upgrade():
    blob = bytearray(_sample_plan().to_bytes())
    struct.pack_into("<I", blob, 8, FORMAT_VERSION + 1)
    with pytest.raises(PlanFormatError, match="newer than this batchscore reads"):
        decode_plan(bytes(blob), "future.plan")


def test_trailing_bytes_are_refused():
    with pytest.raises(PlanFormatError, match="trailing bytes"):
        decode_plan(_sample_plan().to_bytes() + b"x", "long.plan")


def test_object_arrays_cannot_be_stored():
    plan = Plan({"inputs": [], "outputs": [], "layers": []}, {"s": np.array(["a", "b"], dtype=object)})
    with pytest.raises(PlanFormatError, match="cannot store"):
        plan.to_bytes()
