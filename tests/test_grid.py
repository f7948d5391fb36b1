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
