"""Planning to a target: the ε or the resolution that meets a margin of error."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from dpmap import grid
from dpmap._privacy.noise import plan_noise
from dpmap._privacy.postprocess import Z95
from dpmap.analysis.nearby import finite_number, format_area
from dpmap.analysis.totals import STATS
from dpmap.errors import MechanismError, SpecError
from dpmap.spec import ReleaseSpec

if TYPE_CHECKING:  # pragma: no cover
    pass


@dataclass(frozen=True)
class EpsilonPlan:
    """The outcome of :func:`plan_epsilon` / :func:`plan_resolution` (public parameters only).

    ``moe`` is the 95% margin of error reached (≤ ``target_moe``): of one cell's value, or
    with ``area_km2`` of the total over an area of that size (``cells`` cells of average
    size at ``resolution``). With ``expected_total`` it is the expected half-width of the
    honest 95% interval ``[count_lo, count_hi]`` of :func:`aggregate_to` for that area,
    which adds the records of the cells its border cuts to the noise; ``noise_moe`` is
    then the noise-only margin.

    ``border_share`` (with ``area_km2``): the expected records in the cells cut by the
    area's border per record in the area, if records are spread evenly — from the public
    geometry only (the area, its ``perimeter_km`` and the average cell at ``resolution``):
    the width of the interval for the area's true total, U − L, is about
    ``border_share × total``.
    """

    epsilon: float
    moe: float
    target_moe: float
    statistic: str
    resolution: int | tuple[int, ...] | None
    mechanism: str
    delta: float
    area_km2: float | None = None
    cells: float | None = None
    border_share: float | None = None
    perimeter_km: float | None = None
    expected_total: float | None = None
    noise_moe: float | None = None
    zones: int | None = None
    by: str | None = None
    #: a panel: its number of periods (the margin is of each (cell, period) row)
    periods: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if isinstance(self.resolution, tuple):
            out["resolution"] = list(self.resolution)
        out["statement"] = str(self)
        return out

    def __str__(self) -> str:
        text = self._text()
        if self.periods is None:
            return text
        return text + (
            f"; in each of the panel's {self.periods} periods (one release covers them all, "
            "charged once)"
        )

    def _text(self) -> str:
        res = self.resolution
        delta = f", δ = {self.delta:.3g}" if self.delta else ""
        if res is None:  # a zone release: each district is one noisy value
            return (
                f"ε = {self.epsilon:.4g}{delta} ({self.mechanism}) gives a 95% margin of error "
                f"of ±{self.moe:.4g} (target ±{self.target_moe:.4g}) on each zone's "
                f"{self.statistic} ({self.zones} public zones named by {self.by!r}, each "
                "released directly: no roll-up, no border error)"
            )
        finest = res[-1] if isinstance(res, tuple) else res
        where = (
            f"each cell's {self.statistic}"
            if self.area_km2 is None
            else f"the total {self.statistic} over {format_area(self.area_km2)} km² "
            f"(≈{self.cells:.3g} cells)"
        )
        levels = "/".join(map(str, res)) if isinstance(res, tuple) else str(res)
        what = (
            "a 95% margin of error"
            if self.expected_total is None
            else "an expected 95% interval (noise and cells cut by the border)"
        )
        text = (
            f"ε = {self.epsilon:.4g}{delta} ({self.mechanism}) gives {what} of "
            f"±{self.moe:.4g} (target ±{self.target_moe:.4g}) on {where} at H3 resolution {levels} "
            f"(average cell {format_area(grid.average_cell_area_km2(finest))} km²)"
        )
        if self.border_share is None:
            return text
        share = (
            f"{self.border_share:.0%}" if self.border_share < 10 else f"{self.border_share:.3g}×"
        )
        if self.expected_total is None:
            return text + (
                f"; that margin covers the noise only: the cells cut by the area's border hold "
                f"about {share} as many records as the area (even spread assumed), which widens "
                "the 95% interval for its true total (count_lo … count_hi of aggregate_to); pass "
                "expected_total= to plan for that interval"
            )
        border = self.border_share * self.expected_total
        return text + (
            f": noise ±{self.moe - border / 2:.4g} plus half the ≈{border:.4g} expected in cells "
            f"cut by the border ({share} of the {self.expected_total:.4g} expected in the area, "
            "even spread assumed)"
        )


def _plan_spec(params: dict[str, Any], statistic: str) -> dict[str, Any]:
    params = dict(params)
    by = params.pop("by", None)
    if params.get("zones") is not None:
        params["zones"] = grid.to_zones(params["zones"], by)
    elif by is not None:
        raise SpecError(f"by={by!r} names the zones' column; pass zones=<GeoDataFrame> with it")
    for k in ("region", "ledger", "dataset", "diagnostics", "title", "integers"):
        params.pop(k, None)  # they do not change the noise
    if statistic not in STATS:
        raise SpecError(f"statistic must be 'count' or 'sum', got {statistic!r}")
    if statistic == "sum":
        if params.get("bounds") is None:
            raise SpecError(
                "statistic='sum' needs the public bounds of the value; pass bounds=(lo, hi)"
            )
        params.setdefault("value", "value")
    for k in ("categories", "bounds", "level_split"):
        if isinstance(params.get(k), list):
            params[k] = tuple(params[k])
    return params


def _noise_at(
    params: dict[str, Any], epsilon: float, resolution: Any, statistic: str
) -> tuple[Any, Any]:
    """The planned noise of one cell's ``statistic`` (OpenDP's calibration) and the plan."""

    try:
        spec = ReleaseSpec(epsilon=epsilon, resolution=resolution, **params)
    except TypeError as exc:  # unknown keyword
        raise SpecError(str(exc)) from None
    plan = plan_noise(spec)
    key = f"{statistic}@{spec.finest}" if spec.hierarchical else statistic
    return plan.statistics[key], plan


def _margin(noise: Any, cells: float | None) -> float:
    """95% margin of one cell (OpenDP's exact accuracy) or of a total over ``cells`` cells."""
    if cells is None or cells <= 1:
        return float(noise.moe95)
    return float(Z95 * math.sqrt(cells * noise.variance))


def _border_geometry(area: float, perimeter: float, r: int) -> tuple[float, float, float]:
    """Expected numbers of cells touching and wholly inside an area, and its border share
    ((touching − inside) × cell area / area), from public geometry only.

    The cells are taken as regular hexagons of the average area ``a`` at ``r`` (half mean
    width ρ = 3e/π, e the edge), the area as a shape of ``area`` and ``perimeter`` placed
    at random: E[cells touching] = (area + perimeter·ρ + a) / a (Steiner's formula for
    the Minkowski sum; exact for a disc), E[cells inside] ≈ (area − perimeter·ρ + a) / a
    when the area is wide enough to hold a cell (area > perimeter·ρ/2), else 0. Checked
    against H3 overlays of discs of 1-20 km radius at resolutions 5-8: the share is within
    about 20% (H3 cells away from the equator are smaller than average, which the
    average-cell figure overstates, i.e. conservatively)."""
    ac = grid.average_cell_area_km2(r)
    rho = 3 * math.sqrt(2 * ac / (3 * math.sqrt(3))) / math.pi
    touching = (area + perimeter * rho + ac) / ac
    inside = max(0.0, (area - perimeter * rho + ac) / ac) if area > perimeter * rho / 2 else 0.0
    return touching, inside, (touching - inside) * ac / area


def _interval_halfwidth(
    noise: Any, area: float, perimeter: float, r: int, expected_total: float
) -> tuple[float, float]:
    """(expected half-width of [lo, hi], border share) for a roll-up of ``area`` at ``r``:
    ½·(E[U − L] + m(L) + m(U)) with E[U − L] = expected_total × border share and m the
    one-sided 97.5% noise margins of the cells inside and touching (normal approximation)."""
    touching, inside, share = _border_geometry(area, perimeter, r)

    def m(n: float) -> float:
        return n * float(noise.moe95) if n <= 1 else Z95 * math.sqrt(n * noise.variance)

    return 0.5 * (expected_total * share + m(inside) + m(touching)), share


def _check_target(target_moe: Any, area_km2: Any) -> tuple[float, float | None]:
    target = finite_number(target_moe, "target_moe")
    if target <= 0:
        raise SpecError(f"target_moe must be > 0, got {target_moe!r}")
    area = None
    if area_km2 is not None:
        area = finite_number(area_km2, "area_km2")
        if area <= 0:
            raise SpecError(f"area_km2 must be > 0, got {area_km2!r}")
    return target, area


def _check_border(
    area: float | None,
    perimeter_km: Any,
    expected_total: Any,
    statistic: str,
    params: dict[str, Any],
) -> tuple[float | None, float | None]:
    """(perimeter, expected_total), checked; the perimeter defaults to a disc's."""
    if area is None:
        if perimeter_km is not None or expected_total is not None:
            raise SpecError(
                "perimeter_km= and expected_total= describe the area whose total is planned; "
                "pass area_km2= too"
            )
        return None, None
    shortest = 2 * math.sqrt(math.pi * area)  # a disc: the shortest border for the area
    perimeter = shortest
    if perimeter_km is not None:
        perimeter = finite_number(perimeter_km, "perimeter_km")
        if perimeter < shortest * (1 - 1e-9):
            raise SpecError(
                f"perimeter_km={perimeter_km!r} is shorter than any shape of {area:g} km² can have "
                f"(a disc's, {shortest:.4g} km); pass the length of the area's border in km"
            )
    total = None
    if expected_total is not None:
        total = finite_number(expected_total, "expected_total")
        if total < 0:
            raise SpecError(
                f"expected_total must be ≥ 0 (a rough public guess of the area's true total), "
                f"got {expected_total!r}"
            )
        bounds = params.get("bounds")
        if statistic == "sum" and bounds is not None and float(bounds[0]) < 0:
            raise SpecError(
                "expected_total= plans the border error of sums of values ≥ 0; with bounds "
                f"{tuple(bounds)} the border cells' records can pull either way: plan the count "
                "(statistic='count') instead"
            )
    return perimeter, total


def plan_epsilon(
    *,
    target_moe: float,
    resolution: int | list[int] | None = 7,
    statistic: str = "count",
    area_km2: float | None = None,
    rtol: float = 1e-6,
    expected_total: float | None = None,
    perimeter_km: float | None = None,
    **params: Any,
) -> EpsilonPlan:
    """The smallest ε whose 95% margin of error meets ``target_moe``, without data.

    Takes the keywords of :func:`dpmap.explain` except ``epsilon`` (``delta``,
    ``mechanism``, ``person``, ``max_cells``, ``value``/``bounds``, ``count_share``, ...;
    ``region`` is accepted and ignored: it does not change the noise). Every candidate ε
    is calibrated by :func:`dpmap._privacy.noise.plan_noise`, i.e. by OpenDP's privacy maps
    and accuracy helpers, and the answer is found by bisection to relative precision
    ``rtol`` (the returned ε always meets the target).

    statistic
        ``"count"`` or ``"sum"`` (needs ``bounds``).
    area_km2
        Optional: target the margin of the *total* over an area of this size instead of
        one cell. With n = area_km2 / average cell area at ``resolution`` (at least 1),
        the margin is 1.96·√(n·var) (independent noise per cell, normal approximation) —
        the noise only. The plan's ``border_share`` says how much the cells cut by the
        area's border widen the honest interval for its true total.
    expected_total, perimeter_km
        With ``area_km2``: a rough public guess of the area's true total (e.g. from last
        year's published figures; never the private data) makes the target apply to the
        expected half-width of the honest interval ``[count_lo, count_hi]`` of
        :func:`aggregate_to`, noise *and* cells cut by the border (see
        :func:`plan_resolution`). ``perimeter_km``: the length of the area's border
        (default: a disc's, the shortest possible; real districts have longer borders).
    resolution
        H3 resolution (a list plans a hierarchical release, judged by the finest level's
        noise before consistency, an upper bound). ``None`` together with ``epsilon=`` and
        ``area_km2``: pick the resolution instead, see :func:`plan_resolution`.
    zones, by
        Plan a zone release (:func:`dpmap.release` with ``zones=``/``by=``): "what ε gives
        ±``target_moe`` per district?". Each zone is one noisy value, so the target is the
        margin of one zone's count (or sum), like one cell's; leave out ``resolution``
        and ``area_km2`` (no roll-up, no border error). The zones are checked as a release
        checks them. With ``quantiles=``/``value_bands=`` the count and sum get
        ``1 − histogram_share`` of ε, which the plan accounts.

    Privacy
    -------
    Touches no data and spends no budget.
    """
    if params.get("zones") is not None:
        border = (area_km2, expected_total, perimeter_km)
        return _plan_zones(target_moe, resolution, statistic, border, rtol, params)
    if resolution is None:
        if "epsilon" not in params or area_km2 is None:
            raise SpecError(
                "resolution=None asks dpmap to choose the resolution, which needs epsilon= and "
                "area_km2=; otherwise pass resolution=<0..9> to choose ε"
            )
        eps = params.pop("epsilon")
        return plan_resolution(
            target_moe=target_moe,
            epsilon=eps,
            area_km2=area_km2,
            statistic=statistic,
            expected_total=expected_total,
            perimeter_km=perimeter_km,
            **params,
        )
    if "epsilon" in params:
        raise SpecError(
            "plan_epsilon finds ε; do not pass epsilon= (or pass resolution=None to choose the resolution)"
        )
    target, area = _check_target(target_moe, area_km2)
    if not 0 < rtol < 0.1:
        raise SpecError(f"rtol must be in (0, 0.1), got {rtol!r}")
    params = _plan_spec(params, statistic)
    perimeter, total = _check_border(area, perimeter_km, expected_total, statistic, params)
    if area is not None and isinstance(resolution, (list, tuple)):
        raise SpecError(
            "area_km2 plans the total over an area of a flat release; pass one resolution"
        )
    r, cells, share = _area_cells(resolution, area, perimeter, total, target)

    def moe(eps: float) -> float:
        noise = _noise_at(params, eps, resolution, statistic)[0]
        if total is None or area is None or perimeter is None:
            return _margin(noise, cells)
        return _interval_halfwidth(noise, area, perimeter, r, total)[0]

    hi = _smallest_epsilon(moe, target, rtol)
    noise, plan = _noise_at(params, hi, resolution, statistic)
    res = tuple(resolution) if isinstance(resolution, (list, tuple)) else int(resolution)
    return EpsilonPlan(
        epsilon=hi,
        moe=moe(hi),
        target_moe=target,
        statistic=statistic,
        resolution=res if not (isinstance(res, tuple) and len(res) == 1) else res[0],
        mechanism=str(plan.spec.mechanism),
        delta=float(plan.delta),
        periods=_periods_of(plan),
        area_km2=area,
        cells=max(cells, 1.0) if cells is not None else None,
        border_share=share,
        perimeter_km=perimeter,
        expected_total=total,
        noise_moe=_margin(noise, cells) if total is not None else None,
    )


def _periods_of(plan: Any) -> int | None:
    """A panel's number of periods (None for a release of one period)."""
    periods = plan.spec.periods
    return None if periods is None else len(periods)


def _smallest_epsilon(moe: Callable[[float], float], target: float, rtol: float) -> float:
    """The smallest ε (to ``rtol``, rounded up) with ``moe(ε) ≤ target``: margins fall with ε,
    so bracket by doubling, then bisect in log."""
    m1 = moe(1.0)
    guess = max(m1 / target, 1e-9)  # margins scale about like 1/ε
    hi = guess * 1.25
    unreachable = SpecError(
        f"no ε that OpenDP can calibrate (up to 1e6) reaches a margin of ±{target:g}; the target is "
        "below what this mechanism can deliver (e.g. below 1 for discrete Gaussian counts): raise "
        "target_moe"
    )
    try:
        while moe(hi) > target:
            hi *= 2
            if hi > 1e6:
                raise unreachable
    except MechanismError as exc:
        raise unreachable from exc
    lo = hi / 1.6
    while moe(lo) <= target:
        hi, lo = lo, lo / 2
    while hi / lo - 1 > rtol:
        mid = math.sqrt(lo * hi)
        if mid in (lo, hi):
            break
        if moe(mid) <= target:
            hi = mid
        else:
            lo = mid
    return hi


def _area_cells(
    resolution: Any, area: float | None, perimeter: float | None, total: float | None, target: float
) -> tuple[int, float | None, float | None]:
    """For a total over an area: the resolution, the cells it covers and the share of them a
    border cuts (refused when the border alone exceeds the target); (-1, None, None) otherwise."""
    if area is None:
        return -1, None, None
    r = grid.check_resolution(resolution)
    cells = area / grid.average_cell_area_km2(r)
    assert perimeter is not None
    share = _border_geometry(area, perimeter, r)[2]
    if total is not None and 0.5 * total * share >= target:
        raise SpecError(
            f"at resolution {r} the cells cut by the border of a {area:g} km² area hold about "
            f"{total * share:.4g} of its expected {total:g}, so the 95% interval for its total "
            f"is at least ±{0.5 * total * share:.4g} whatever ε, above the target "
            f"±{target:g}; choose a finer resolution (plan_resolution picks one) or raise "
            "target_moe"
        )
    return r, cells, share


def plan_resolution(
    *,
    target_moe: float,
    epsilon: float,
    area_km2: float,
    statistic: str = "count",
    expected_total: float | None = None,
    perimeter_km: float | None = None,
    **params: Any,
) -> EpsilonPlan:
    """The finest resolution (≤ 9) at which the total over ``area_km2`` meets ``target_moe``.

    At a fixed ε every cell gets the same noise whatever the resolution, so finer cells
    mean more noise draws in an area of a given size: the noise margin of the area's
    total is 1.96·√(n·var) with n = max(1, area_km2 / average cell area) (the one cell's
    exact margin when the area fits in one cell). Coarser cells, on the other hand, make
    the error at the area's border larger: a roll-up (:func:`aggregate_to`) can only say
    that the true total lies between the cells wholly inside the area and all cells
    touching it, and the cells its border cuts hold a share ``border_share`` of the
    area's records (estimated from the public geometry alone; see :class:`EpsilonPlan`).

    Without ``expected_total`` the finest resolution whose noise margin meets the target
    is returned — among those, the one with the smallest border error — and the plan
    reports its ``border_share``. With ``expected_total`` (a rough *public* guess of the
    area's total) the target applies to the expected half-width of the honest interval,
    ½·(expected_total·border_share + m(inside) + m(touching)): the finest resolution that
    meets it is returned, or an error names the narrowest interval any resolution reaches.
    ``perimeter_km``: the length of the area's border (default: a disc's, the shortest; a
    longer border cuts more cells). Other keywords as for :func:`plan_epsilon`.

    Privacy
    -------
    Touches no data and spends no budget.
    """
    if "resolution" in params:
        raise SpecError("plan_resolution chooses the resolution; do not pass resolution=")
    if params.get("zones") is not None:
        raise SpecError(
            "plan_resolution chooses an H3 resolution for roll-ups, but a zone release has none "
            "(each zone is one noisy value); to plan ε per zone use plan_epsilon(target_moe=..., "
            "zones=..., by=...)"
        )
    target, area = _check_target(target_moe, area_km2)
    if area is None:
        raise SpecError("plan_resolution needs area_km2=<the size of the area whose total matters>")
    params = _plan_spec(params, statistic)
    perimeter, total = _check_border(area, perimeter_km, expected_total, statistic, params)
    assert perimeter is not None
    eps = finite_number(epsilon, "epsilon")
    # the noise of one cell does not depend on the resolution (the sensitivities do not):
    # plan once, then count cells
    noise, plan = _noise_at(params, eps, grid.MAX_RESOLUTION, statistic)
    best: tuple[float, int] | None = None
    for r in range(grid.MAX_RESOLUTION, -1, -1):
        cells = area / grid.average_cell_area_km2(r)
        noise_moe = _margin(noise, cells)
        share = _border_geometry(area, perimeter, r)[2]
        reached = (
            noise_moe if total is None else _interval_halfwidth(noise, area, perimeter, r, total)[0]
        )
        if reached <= target:
            return EpsilonPlan(
                epsilon=float(plan.epsilon),
                moe=reached,
                target_moe=target,
                statistic=statistic,
                resolution=r,
                mechanism=str(plan.spec.mechanism),
                delta=float(plan.delta),
                periods=_periods_of(plan),
                area_km2=area,
                cells=max(cells, 1.0),
                border_share=share,
                perimeter_km=perimeter,
                expected_total=total,
                noise_moe=noise_moe if total is not None else None,
            )
        if best is None or reached < best[0]:
            best = (reached, r)
    assert best is not None
    if total is None:
        raise SpecError(
            f"at ε = {eps:g} even resolution 0 gives a margin of ±{best[0]:.4g} on the total over "
            f"{area:g} km², above the target ±{target:g}; raise epsilon (see plan_epsilon) or the "
            "target"
        )
    finest_border = 0.5 * total * _border_geometry(area, perimeter, grid.MAX_RESOLUTION)[2]
    fix = (
        "no ε helps: a roll-up of cells cannot reach it (even the finest cells leave "
        f"±{finest_border:.4g} from the border alone); release the area's total directly or "
        "raise the target"
        if finest_border >= target
        else "raise epsilon (see plan_epsilon) or the target"
    )
    raise SpecError(
        f"at ε = {eps:g} no resolution reaches ±{target:g} on the total over {area:g} km² with "
        f"about {total:g} expected in it: the narrowest expected 95% interval is ±{best[0]:.4g} "
        f"at resolution {best[1]} (finer cells add noise, coarser cells add border error); {fix}"
    )


def _plan_zones(
    target_moe: Any,
    resolution: Any,
    statistic: str,
    border: tuple[Any, Any, Any],
    rtol: float,
    params: dict[str, Any],
) -> EpsilonPlan:
    """:func:`plan_epsilon` for a zone release: the smallest ε whose 95% margin of one zone's
    count (or sum) meets the target (every zone is one noisy value with the same noise)."""
    if "epsilon" in params:
        raise SpecError(
            "plan_epsilon finds ε; do not pass epsilon= (plan_resolution does not apply to zones)"
        )
    if resolution is None or isinstance(resolution, (list, tuple)) or resolution != 7:
        raise SpecError(
            f"zones= and resolution={resolution!r} exclude each other: a zone release has one "
            "row per zone, not H3 cells; drop the resolution"
        )
    if any(v is not None for v in border):
        raise SpecError(
            "area_km2=, expected_total= and perimeter_km= plan a roll-up of H3 cells over an "
            "area; with zones= each zone is released directly, so its margin is one value's: "
            "drop them"
        )
    target, _area = _check_target(target_moe, None)
    if not 0 < rtol < 0.1:
        raise SpecError(f"rtol must be in (0, 0.1), got {rtol!r}")
    params = _plan_spec(params, statistic)
    zones = params["zones"]

    def moe(eps: float) -> float:
        return float(_noise_at(params, eps, None, statistic)[0].moe95)

    eps = _smallest_epsilon(moe, target, rtol)
    plan = _noise_at(params, eps, None, statistic)[1]
    return EpsilonPlan(
        epsilon=eps,
        moe=moe(eps),
        target_moe=target,
        statistic=statistic,
        resolution=None,
        mechanism=str(plan.spec.mechanism),
        delta=float(plan.delta),
        periods=_periods_of(plan),
        zones=len(zones),
        by=zones.by,
    )
