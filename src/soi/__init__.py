"""soi: per-example training dynamics, dataset cartography and Subsets of Interest.

Data flow: record (trainers) -> :mod:`soi.store` (run directories) -> :mod:`soi.analysis`
(metrics, SOI categories, transitions) -> :mod:`soi.selection` -> report.
"""

__version__ = "0.1.0"
