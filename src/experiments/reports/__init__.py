"""HTML reports: ``report.html`` of a run (:mod:`experiments.reports.run_page`) and
``comparison.html`` of a sweep (:mod:`experiments.reports.sweep_page`), self-contained pages
with matplotlib charts as inline SVG, readable offline and logged to W&B as HTML."""
