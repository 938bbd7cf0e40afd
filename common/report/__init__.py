"""The run report: one self-contained static HTML page, and the Pareto plot as a PNG.

The page must open straight from the MinIO console, so it fetches nothing: CSS and the
small sorting script are inline and every chart is inline SVG. Every piece of text from a
document is escaped. Numbers measured on the runner's own CPU carry a "host CPU — not an
iPhone" label wherever they appear, and a missing measurement is a gap with its reason,
never a number.

cells: labels, formats, latency columns; charts: SVG and PNG; sections: one function per
section; page: the page around them.
"""

from common.report.cells import HOST_LABEL
from common.report.charts import pareto_front, pareto_png, pareto_points
from common.report.page import render_report

__all__ = ["HOST_LABEL", "pareto_front", "pareto_png", "pareto_points", "render_report"]
