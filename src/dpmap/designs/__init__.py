"""Release designs: which noisy vectors a release measures and how it turns them into estimates.

One module per design. :mod:`~dpmap.designs.hierarchy` holds the H3 tree arithmetic (level
totals, weighted least squares) that several designs and the analyses share.
"""
