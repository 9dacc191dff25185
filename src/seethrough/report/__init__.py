"""seethrough.report: self-contained, offline HTML reports and the matplotlib figures in them.

`write_report` renders the bench's games (`GameSection`, `MetricRow`: defined in `seethrough.bench.table`,
re-exported here) into one ``index.html`` with every case plotted (`strip_plot`) and embedded as a
data URI (`figure_to_data_uri`);
`write_audit_report` renders one audit (verdict, findings with validation, every class's scan).
Sits on top of the taxonomy areas and `bench`; nothing below imports it.
"""

from ..bench.table import GameSection, MetricRow
from .audit import write_audit_report
from .figures import figure_to_data_uri, strip_plot
from .html import write_report

__all__ = ["GameSection", "MetricRow", "write_report", "write_audit_report", "strip_plot", "figure_to_data_uri"]
