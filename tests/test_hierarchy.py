"""Hierarchical consistency: exact against a dense least-squares solver, and rounding."""

from __future__ import annotations

import h3
import numpy as np
import pytest

from dpmap.hierarchy import build_tree, consistent, round_consistent


def _leaves(resolution: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centre = h3.latlng_to_cell(float(rng.uniform(-50, 50)), float(rng.uniform(-170, 170)), resolution)
    disk = sorted(h3.grid_disk(centre, k))
    return np.array(sorted(h3.str_to_int(c) for c in disk), dtype=np.int64)


def _pentagon_leaves(resolution: int) -> np.ndarray:
    pent = h3.get_pentagons(resolution - 2)[3]
    kids = h3.cell_to_children(pent, resolution)
    return np.array(sorted(h3.str_to_int(c) for c in kids), dtype=np.int64)


def _dense(tree, y, var):  # type: ignore[no-untyped-def]
    leaves = tree.levels[-1]
    n = len(leaves)
    rows = []
    for j, level in enumerate(tree.levels):
        # which leaves descend from each node of level j
        anc = np.arange(n)
        for jj in range(len(tree.levels) - 1, j, -1):
            anc = tree.parent[jj][anc]
        H = np.zeros((len(level), n))
        H[anc, np.arange(n)] = 1.0
        rows.append(H)
    H = np.vstack(rows)
    w = np.concatenate([np.full(len(level), 1 / var[j]) for j, level in enumerate(tree.levels)])
    A = H.T @ (w[:, None] * H)
    theta = np.linalg.solve(A, H.T @ (w * np.concatenate(y)))
    cov = H @ np.linalg.solve(A, H.T)
    return H @ theta, np.diag(cov)


@pytest.mark.parametrize("leaves,res", [
    (_leaves(7, 6, 1), (5, 6, 7)),
    (_leaves(8, 9, 2), (6, 8)),
    (_pentagon_leaves(6), (4, 5, 6)),  # a pentagon: six children per split
    (_leaves(7, 4, 3), (4, 5, 6, 7)),
])
def test_two_pass_equals_dense_solver(leaves: np.ndarray, res: tuple[int, ...]) -> None:
    tree = build_tree(leaves, res)
    rng = np.random.default_rng(0)
    var = [float(v) for v in rng.uniform(0.5, 20, len(res))]
    y = [rng.normal(0, 5, len(level)) for level in tree.levels]
    x, P = consistent(tree, y, var)
    xd, Pd = _dense(tree, y, var)
    np.testing.assert_allclose(np.concatenate(x), xd, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np.concatenate(P), Pd, rtol=1e-9, atol=1e-12)
    for j in range(1, len(tree.levels)):  # children sum to their parent
        sums = np.bincount(tree.parent[j], weights=x[j], minlength=len(tree.levels[j - 1]))
        np.testing.assert_allclose(sums, x[j - 1], atol=1e-9)


def test_pentagon_parent_has_six_children() -> None:
    tree = build_tree(_pentagon_leaves(6), (5, 6))
    kids = np.bincount(tree.parent[1], minlength=len(tree.levels[0]))
    assert 6 in kids and set(kids) <= {6, 7}


def test_columns_are_independent_trees() -> None:
    tree = build_tree(_leaves(7, 5, 4), (6, 7))
    rng = np.random.default_rng(1)
    y = [rng.normal(0, 3, (len(level), 3)) for level in tree.levels]
    x, _ = consistent(tree, y, [4.0, 2.0])
    for c in range(3):
        xc, _ = consistent(tree, [v[:, c] for v in y], [4.0, 2.0])
        for a, b in zip(x, xc, strict=True):
            np.testing.assert_allclose(a[:, c], b)


def test_rounding_is_nonnegative_integer_and_consistent() -> None:
    tree = build_tree(_leaves(7, 8, 5), (5, 6, 7))
    rng = np.random.default_rng(2)
    y = [rng.normal(0, 4, len(level)) + 3 for level in tree.levels]
    x, _ = consistent(tree, y, [8.0, 4.0, 2.0])
    r = round_consistent(tree, x)
    for j, level in enumerate(r):
        assert level.dtype == np.int64 and (level >= 0).all()
        if j:
            sums = np.bincount(tree.parent[j], weights=level, minlength=len(r[j - 1]))
            np.testing.assert_array_equal(sums, r[j - 1])
    # rounding moves no leaf further than needed: within 1 of the clipped share
    assert np.abs(r[0] - np.clip(x[0], 0, None)).max() <= 0.5 + 1e-9
