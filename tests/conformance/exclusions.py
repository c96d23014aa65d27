"""ONNX node test cases of supported ops that the engine does not pass, each with its reason.

This is the only place exclusions live; tests/conformance/test_node_cases.py checks that they stay
under 5% of the supported cases and that each names a case that exists.
"""

EXCLUDED: dict[str, str] = {
    "test_identity_opt": "optional-typed inputs (ONNX optional type) are not tensors; the IR holds tensors only",
    "test_identity_sequence": "sequence-typed inputs are not tensors; the IR holds tensors only",
}
