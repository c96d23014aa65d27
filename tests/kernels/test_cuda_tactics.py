"""kernels/cuda/conv.plan_index_for: a recorded cuDNN tactic is found by its plan's name in a graph
of another shape, whose heuristic ranks its plans differently (no GPU needed: the names are data)."""

from kernels.cuda.conv import plan_index_for

# The same engines ranked for batch 256 and for batch 1 (names as cuDNN reports them).
AT_256 = ["eng0_k2=3", "eng12_k5=1", "eng7_k2=1", "eng3"]
AT_1 = ["eng7_k2=1", "eng3", "eng0_k2=3"]


def _names(names):
    calls = []

    def name_at(i):
        calls.append(i)
        return names[i]

    return name_at, calls


def test_a_tactic_is_found_by_name_at_another_rank():
    name_at, _ = _names(AT_1)
    assert plan_index_for("cudnn:2:eng7_k2=1", len(AT_1), name_at) == 0
    assert plan_index_for("cudnn:0:eng0_k2=3", len(AT_1), name_at) == 2


def test_the_recorded_rank_is_checked_first():
    name_at, calls = _names(AT_256)
    assert plan_index_for("cudnn:1:eng12_k5=1", len(AT_256), name_at) == 1 and calls == [1]


def test_an_engine_this_shape_lacks_falls_back_to_cudnns_first_choice():
    name_at, _ = _names(AT_1)
    assert plan_index_for("cudnn:1:eng12_k5=1", len(AT_1), name_at) == 0  # not index 1, another engine


def test_tactics_without_a_name_or_from_elsewhere():
    name_at, calls = _names(AT_1)
    assert plan_index_for("cudnn:2", len(AT_1), name_at) == 2  # a plan from before names: its index
    assert plan_index_for("cudnn:9", len(AT_1), name_at) == 0  # out of range here
    assert plan_index_for("cudnn:x:eng3", len(AT_1), name_at) == 0
    assert plan_index_for(None, len(AT_1), name_at) == 0 and plan_index_for("sgemm", len(AT_1), name_at) == 0
    assert calls == []


def test_tuning_compares_a_candidate_with_the_named_tactic_a_runner_reports():
    # Candidates are "cudnn:INDEX"; a runner reports "cudnn:INDEX:NAME". Comparing the strings whole
    # skipped every candidate, and the build failed with "no candidate could be set up".
    from engine.tune import tactic_index

    assert tactic_index("cudnn:10:eng41_k2=1_k13=0") == tactic_index("cudnn:10") == 10
    assert tactic_index("cudnn:2:eng7") != tactic_index("cudnn:12")
