"""Helpers for pass tests: run a Graph unoptimized, and compare a rewritten graph with the original."""

from __future__ import annotations

import copy

import numpy as np

import engine
from engine.builder import BuildConfig
from engine.ir import Graph


def run_graph(graph: Graph, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Execute a graph exactly as it is (no optimization passes) on the numpy backend."""
    plan = engine.build(copy.deepcopy(graph), BuildConfig(optimize=False, probe=False))
    return engine.Engine(plan).create_context().run(feeds)


def assert_same_outputs(original: Graph, rewritten: Graph, feeds: dict[str, np.ndarray], rtol=1e-5, atol=1e-5):
    want = run_graph(original, feeds)
    got = run_graph(rewritten, feeds)
    assert set(got) == set(want), f"outputs differ: {sorted(got)} vs {sorted(want)}"
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=rtol, atol=atol, err_msg=name)


def random_feeds(graph: Graph, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for name in graph.inputs:
        value = graph.value(name)
        shape = [batch if isinstance(d, str) else d for d in value.shape]
        feeds[name] = rng.standard_normal(shape).astype(value.dtype)
    return feeds
