"""Daily and weekly reports (日报/周报, issue 19 item 5): alarms, work orders, data
completeness and construction-site dust over one local day or week.

- :mod:`services.reports.data`: the report's content (frozen dataclasses) and its errors;
- :mod:`services.reports.collect`: :func:`~services.reports.collect.collect` reads it from
  PostgreSQL (work orders) and InfluxDB (alarms, readings), read-only, bounded to the period;
- :mod:`services.reports.render`: :func:`~services.reports.render.render_html` and
  :func:`~services.reports.render.render_pdf` (fpdf2, a CJK font embedded as a subset).

The modules are imported by name (``from services.reports.render import render_pdf``):
importing the package loads neither psycopg nor matplotlib.
"""
