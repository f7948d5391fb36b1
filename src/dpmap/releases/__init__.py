"""The release pipeline and the immutable :class:`Release` with its manifest.

``points → validate → bin (H3) → bound per person → aggregate (engine, exact, PRIVATE)
→ one composed OpenDP measurement (the only noise, the only accounting)
→ post-processing (suppression, means, margins) → Release (cells + manifest)``
"""

from dpmap.releases.pipeline import release
from dpmap.releases.planning import Explanation, explain
from dpmap.releases.result import Release, read_release
from dpmap.releases.targets import EpsilonPlan, plan_epsilon, plan_resolution

__all__ = [
    "EpsilonPlan",
    "Explanation",
    "Release",
    "explain",
    "plan_epsilon",
    "plan_resolution",
    "read_release",
    "release",
]
