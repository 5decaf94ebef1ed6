"""The static HTML report of a run: overview, measure galleries, unit pages, counterfactuals.

:func:`pipeline.reporting.site.build_report` reads the artifacts of one ``results/{run}``
folder and the strips of :mod:`pipeline.stages.strips`, and writes a self-contained site
(relative links, no server, no network) whose entry is ``index.html``. It runs on the CPU
and loads no model; the pages are Jinja2 templates in ``templates/``. This package file
imports nothing, so the strips stage's code version does not follow the site's modules.
"""
