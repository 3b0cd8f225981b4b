"""The run report: one self-contained HTML page, its PNGs, and a model card.

- `section`: `Section`, the one way a stage (tuning, compression, a user)
  hands the report its part, and `scores_section`;
- `plots`: every plot of the report, drawn with `kerastrain.figures.figure`;
- `html`: ``report.html`` and its parts; `write_report` takes one
  `ReportInputs` record of what the run produced;
- `model_card`: ``MODEL_CARD.md``;
- `formatting`: how values read in both.

The report only draws and writes what it is given; it computes no metric.
"""

from kerastrain.report.html import REPORT_NAME, ReportInputs, write_report
from kerastrain.report.model_card import MODEL_CARD_NAME, write_model_card
from kerastrain.report.plots import plot_history
from kerastrain.report.section import METRIC_COLUMNS, Section, scores_section

__all__ = [
    "Section",
    "scores_section",
    "ReportInputs",
    "write_report",
    "write_model_card",
    "plot_history",
    "REPORT_NAME",
    "MODEL_CARD_NAME",
    "METRIC_COLUMNS",
]
