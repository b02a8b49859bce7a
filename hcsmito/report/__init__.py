"""The run report: figures (:mod:`.figures`) and the self-contained HTML page (:mod:`.html`).

``build_report(OUT)`` rebuilds ``OUT/report.html`` from ``OUT/tables`` and
``OUT/manifest.json`` without reprocessing any image.
"""

from hcsmito.report.html import build_report, render_report

__all__ = ["build_report", "render_report"]
