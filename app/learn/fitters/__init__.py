"""Fitters of the heads that need fitting, registered by head name on import.

A new fittable head (``needs_fitting = True`` in models/heads/) brings one file here with a function
decorated ``@FITTERS.register("<head name>")`` and one import line below.
"""

from app.learn.fitters import netvlad  # noqa: F401  (imported for its registration)
from app.learn.fitters.base import DEFAULT_ASSIGNMENT_RATIO, FITTERS, FitOptions, HeadFit, HeadFitter

__all__ = ["DEFAULT_ASSIGNMENT_RATIO", "FITTERS", "FitOptions", "HeadFit", "HeadFitter"]
