"""The public cell set of a region."""

from __future__ import annotations

import h3
import numpy as np
import shapely
from shapely.geometry import Point, box

from dpmap import grid


def test_cell_whose_centre_is_in_a_hole_is_kept() -> None:
    """H3's overlap fill skips such a cell; dpmap must not (people around the hole count)."""
    cell = h3.latlng_to_cell(39.5, 116.5, 5)
    lat, lng = h3.cell_to_latlng(cell)
    hole = Point(lng, lat).buffer(0.01)  # about 1 km around the cell's centre
    region = grid.to_region(box(lng - 1, lat - 1, lng + 1, lat + 1).difference(hole))
    cells = grid.region_to_cells(region, 5)
    assert h3.str_to_int(cell) in set(cells.tolist())
    # and no cell is added that does not touch the region
    polys = grid.cells_to_polygons(cells)
    assert shapely.intersects(polys, region.geometry).all()


def test_cell_set_is_cached_and_read_only() -> None:
    region = grid.to_region(box(116.0, 39.0, 116.3, 39.2))
    a = grid.region_to_cells(region, 7)
    b = grid.region_to_cells(grid.to_region(box(116.0, 39.0, 116.3, 39.2)), 7)
    assert a is b
    assert not a.flags.writeable
    assert np.all(np.diff(a) > 0)


def test_domain_polygons_are_those_of_each_cell_in_any_order() -> None:
    """The polygons drawn ahead on a thread are each cell's own: cells of the set in any
    order and repeated (a category breakdown), cells outside it (a coarser level), none."""
    region = grid.Region(box(116.0, 39.0, 116.3, 39.2))
    domain = grid.region_to_cells(region, 7)
    ahead = grid.DomainPolygons(domain)
    rng = np.random.default_rng(5)
    outside = np.array([h3.str_to_int(h3.latlng_to_cell(45.0, 120.0, 7))], dtype=np.int64)
    coarse = np.unique([h3.str_to_int(h3.cell_to_parent(h3.int_to_str(int(c)), 5)) for c in domain])
    for cells in (
        domain,
        np.repeat(domain, 3),
        rng.permutation(domain)[:50],
        np.concatenate([outside, domain[:7], coarse, domain[-1:]]),
        np.array([outside[0], outside[0]]),
        np.array([], dtype=np.int64),
    ):
        got = ahead.of(cells)
        want = grid.cells_to_polygons(cells)
        assert len(got) == len(want) == len(cells)
        assert all(shapely.equals_exact(g, w, tolerance=0) for g, w in zip(got, want, strict=True))
        for g, c in zip(got[:20], cells[:20], strict=False):  # each polygon contains its centre
            lat, lng = h3.cell_to_latlng(h3.int_to_str(int(c)))
            assert g.contains(Point(lng, lat))
    assert len(grid.DomainPolygons(np.array([], dtype=np.int64)).of(domain[:3])) == 3
