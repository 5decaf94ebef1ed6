"""The static HTML report of a run: overview, measure galleries, unit pages, counterfactuals.

``build_report(run_dir, out_dir, ...)`` reads the artifacts of one ``results/{run}`` folder
and writes a self-contained site (relative links, no server, no network) whose entry is
``index.html``.
"""

from pipeline.reporting.site import build_report

__all__ = ["build_report"]
