"""Analysis of recorded dynamics: metrics, SOI categories, per-example tables, run-to-run transitions."""

from soi.analysis.categories import SOI_CATEGORIES, CategoryRules, category_labels, early_cutoff, soi_categories
from soi.analysis.per_example import Analysis, analyze, analyze_run, per_example_table, summarize

__all__ = [
    "SOI_CATEGORIES",
    "Analysis",
    "CategoryRules",
    "analyze",
    "analyze_run",
    "category_labels",
    "early_cutoff",
    "per_example_table",
    "soi_categories",
    "summarize",
]
