"""The web console at /ui (issue 19): server-rendered pages (Jinja2) with vendored htmx and uPlot.

routes.py is the shell (nav, base page, static files); api.py the console's own data routes under /ui/api
(behind the API key); ops_pages.py the Traces, Training and Evals pages. Not for the HTTP APIs themselves.
"""
