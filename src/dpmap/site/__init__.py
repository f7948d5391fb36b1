"""A public website of published releases: :func:`publish` and ``dpmap publish``.

The website answers "how much is around here?" from the published numbers only: a map of
the released cells or zones (suppressed ones hatched, never shown as 0), a period slider,
an "around here" answer over whole published cells computed in the browser, a district
table with a CSV download, and a method page written from the manifests. It is one folder
that opens from disk or any static web host and makes no network request (no base map
unless the agency asks for one).

Everything here is post-processing of already published noisy values: no data is read
and no privacy budget is spent.
"""
