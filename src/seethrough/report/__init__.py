"""seethrough.report: self-contained, offline HTML reports and the matplotlib figures in them.

`write_report` renders the bench's games (`GameSection`, `MetricRow`) into one ``index.html``
with every case plotted (`strip_plot`) and embedded as a data URI (`figure_to_data_uri`).
Sits on top of the taxonomy areas and `bench`; nothing below imports it.
"""

from .figures import figure_to_data_uri, strip_plot
from .html import GameSection, MetricRow, write_report

__all__ = ["GameSection", "MetricRow", "write_report", "strip_plot", "figure_to_data_uri"]
