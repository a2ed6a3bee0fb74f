"""Reports: figures and tables of analysis results (matplotlib is imported only when drawing).

``write_report(DIR)`` writes the self-contained HTML report ``DIR/report.html`` (docs/report.md).
"""

from soi.plots import transition_heatmap
from soi.report.html import read_report_data, write_report

__all__ = ["read_report_data", "transition_heatmap", "write_report"]
