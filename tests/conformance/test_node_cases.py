"""Every ONNX node test case whose ops the engine supports, run through build -> plan file -> run."""

import pytest

from tests.conformance.exclusions import EXCLUDED
from tests.conformance.node_cases import all_node_cases, is_supported, run_case

SUPPORTED = sorted(name for name, case in all_node_cases().items() if is_supported(case))


@pytest.mark.parametrize("name", SUPPORTED)
def test_node_case(name):
    if name in EXCLUDED:
        pytest.skip(f"excluded: {EXCLUDED[name]}")
    run_case(all_node_cases()[name])


def test_exclusions_are_few_and_real():
    stale = sorted(set(EXCLUDED) - set(SUPPORTED))
    assert not stale, f"exclusions that name no supported case: {stale}"
    assert len(EXCLUDED) < 0.05 * len(SUPPORTED), f"{len(EXCLUDED)} exclusions of {len(SUPPORTED)} cases"
    assert all(reason.strip() for reason in EXCLUDED.values())


def test_every_supported_op_has_node_cases():
    from kernels.cpu import CPU_OPS

    covered = set().union(*({n.op_type for n in all_node_cases()[name].model.graph.node} for name in SUPPORTED))
    assert not CPU_OPS.op_types() - covered, sorted(CPU_OPS.op_types() - covered)
