"""The static HTML report of a run: overview, measure galleries, unit pages, counterfactuals.

``build_report(run_dir, strips_path, out_dir, ...)`` reads the artifacts of one
``results/{run}`` folder and the strips of :mod:`pipeline.stages.strips`, and writes a
self-contained site (relative links, no server, no network) whose entry is ``index.html``.
It runs on the CPU and loads no model; the pages are Jinja2 templates in ``templates/``.
"""

from pipeline.reporting.site import build_report

__all__ = ["build_report"]
