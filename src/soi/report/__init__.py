"""Reports: figures and tables of analysis results (matplotlib is imported only when drawing)."""

from soi.report.heatmap import transition_heatmap

__all__ = ["transition_heatmap"]
