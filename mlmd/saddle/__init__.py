"""Saddle-point searches: GP-dimer, OT-GP-dimer and the classical dimer (``mlmd.saddle.search``)."""

from .search import METHODS, SaddleResult, search

__all__ = ["METHODS", "SaddleResult", "search"]
