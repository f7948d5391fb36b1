"""Private discovery: no public region; the published cells are chosen by OpenDP's threshold.

Only occupied (cell [× category]) keys exist in the bounded aggregates. OpenDP's threshold
measurement noises their counts and keeps a key only when its noisy count exceeds a threshold
calibrated to δ (the probability that a key held by a single person's records shows); the sums
are then noised on the kept keys only. The published cells are therefore themselves a DP
output, which is why this design needs δ > 0.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from dpmap import grid
from dpmap._privacy.noise import NoisePlan, decode_keys, encode_keys, plan_noise
from dpmap._privacy.postprocess import CountNoise
from dpmap.aggregates import BoundedAggregates
from dpmap.designs.base import Correlation, DesignOptions, Measured, PeriodCovariance, RowsInfo
from dpmap.designs.flat import independent_correlation, noisy_estimates
from dpmap.spec import ReleaseSpec

__all__ = ["Discovery"]


class Discovery:
    """Cells chosen privately by OpenDP's threshold mechanism (see the module docstring)."""

    kind: ClassVar[str] = "discovery"
    several_levels: ClassVar[bool] = False
    mixed_resolutions: ClassVar[bool] = False
    integer = True
    domain: np.ndarray | None = None

    def __init__(self, spec: ReleaseSpec, noise: NoisePlan) -> None:
        self.spec, self.noise = spec, noise

    @classmethod
    def wants(cls, spec: ReleaseSpec, region: grid.Region | None, options: DesignOptions) -> bool:
        return region is None

    @classmethod
    def plan(
        cls, spec: ReleaseSpec, region: grid.Region | None, options: DesignOptions
    ) -> Discovery:
        return cls(spec, plan_noise(spec, discovery=True))

    def rows(self) -> int | None:
        return None

    def count_noise(self) -> CountNoise | None:
        return None  # the threshold already chose the cells; suppression is per row

    def describe(self) -> dict[str, Any] | None:
        return None

    def explain_lines(self) -> list[str]:
        return [
            f"  discovery: a cell is published only if its noisy count exceeds {self.noise.threshold}"
        ]

    def measure(self, aggregates: BoundedAggregates) -> Measured:
        keys = encode_keys(aggregates.cells, aggregates.category)
        order = np.argsort(keys)
        kept, noisy = self.noise.run_discovery(
            keys[order],
            aggregates.count[order],
            aggregates.sum[order] if aggregates.sum is not None else None,
        )
        cells, category = decode_keys(kept, self.spec.categories is not None)
        return Measured(
            estimates=noisy_estimates(self.noise, noisy),
            cells=cells,
            resolutions=np.full(len(kept), self.spec.finest),
            category=category,
        )

    def manifest_entries(self, measured: Measured) -> dict[str, Any]:
        return {
            "cell_selection": {
                "method": "private discovery",
                "rule": f"OpenDP {self.spec.mechanism} threshold: a cell is published only if "
                f"its noisy count exceeds {self.noise.threshold}",
                "threshold": self.noise.threshold,
                "region": None,
            }
        }

    @classmethod
    def recognises(cls, manifest: dict[str, Any]) -> bool:
        return (manifest.get("cell_selection") or {}).get("method") == "private discovery"

    @classmethod
    def correlation(cls, manifest: dict[str, Any], rows: RowsInfo) -> Correlation:
        return independent_correlation(manifest, rows.stats)

    @classmethod
    def period_covariance(cls, manifest: dict[str, Any]) -> PeriodCovariance | None:
        return None  # each period of a panel has its own independent noise
