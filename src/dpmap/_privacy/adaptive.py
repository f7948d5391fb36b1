"""The OpenDP building blocks of the adaptive designs (PrivTree and the adaptive grid).

Both designs choose which tree nodes to measure from earlier noisy values, so their
measurements are composed with OpenDP's *adaptive* compositor under pure ε-DP (max
divergence). This module builds every OpenDP object they need; the designs
(:mod:`dpmap.designs.privtree`, :mod:`dpmap.designs.adaptive_grid`) only say what to gather
and with which sensitivity and scale.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import opendp.prelude as dp

from dpmap._privacy.noise import AGGREGATES, PERSONS, VEC_I64

__all__ = [
    "OpenDPException",
    "adaptive_compositor",
    "gathered",
    "laplace_epsilon",
    "then_laplace",
    "user_measurement",
    "vector_laplace",
]

#: OpenDP's error, for the designs' ``except`` clauses
OpenDPException = dp.OpenDPException


def adaptive_compositor(d_mids: Sequence[float]) -> Any:
    """OpenDP's adaptive composition of measurements of the bounded aggregates, with these
    ε's in the order they will be asked (pure ε-DP; one person = distance 1)."""
    return dp.c.make_adaptive_composition(
        AGGREGATES, PERSONS, dp.max_divergence(), d_in=1, d_mids=list(d_mids)
    )


def gathered(function: Callable[[Any], np.ndarray], l1: int) -> Any:
    """A user transformation from the bounded aggregates to an int64 vector, whose L1
    distance grows by at most ``l1`` per person (``function`` must keep that promise)."""
    return dp.t.make_user_transformation(
        AGGREGATES,
        PERSONS,
        VEC_I64,
        dp.l1_distance(T="i64"),
        function=function,
        stability_map=lambda d: d * l1,
    )


def then_laplace(chain: Any, scale: float) -> Any:
    """``chain`` followed by discrete Laplace noise of ``scale`` on each coordinate."""
    return chain >> dp.m.then_laplace(scale=scale)


def laplace_epsilon(chain: Any, scale: float) -> float:
    """OpenDP's ε for one person of ``chain`` with discrete Laplace noise of ``scale``."""
    return float(then_laplace(chain, scale).map(1))


def vector_laplace(scale: float) -> Any:
    """Discrete Laplace noise of ``scale`` on an int64 vector (the PrivTree's decisions, whose
    privacy is accounted by the tree measurement's own map)."""
    return dp.m.make_laplace(VEC_I64, dp.l1_distance(T="i64"), scale=scale)


def user_measurement(function: Callable[[Any], Any], privacy_map: Callable[[int], float]) -> Any:
    """A measurement of the bounded aggregates whose privacy map dpmap states (the PrivTree
    split; its proof is in ``docs/adaptive-privacy.md`` and its map is tested exactly)."""
    return dp.m.make_user_measurement(
        AGGREGATES,
        PERSONS,
        dp.max_divergence(),
        function=function,
        privacy_map=privacy_map,
        TO="ExtrinsicObject",
    )
