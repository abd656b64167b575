"""``fakespotter serve``: a web page and a JSON API around a loaded detector.

Needs the ``serve`` extra (FastAPI, uvicorn, python-multipart). Import
:func:`fakespotter.serve.app.create_app`; this package itself imports nothing heavy, so the
command line can list ``serve`` without the extra installed.
"""
