"""gunicorn -c examples/gunicorn_app/gunicorn.conf.py  (see README.md)

WALOGS_EVENTS_DIR is the log directory (default ./events-log), WALOGS_EVENTS_BIND
the address (default 127.0.0.1:8000), WEB_CONCURRENCY the number of workers (4).
"""

import os
from typing import Any

import walogs

wsgi_app = "app:app"
pythonpath = os.path.dirname(os.path.abspath(__file__))
bind = [os.environ.get("WALOGS_EVENTS_BIND", "127.0.0.1:8000")]
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))


def post_worker_init(worker: Any) -> None:
    """Open this worker's writer before its first request: a log that cannot be opened
    stops the worker from booting (gunicorn then stops) instead of failing requests."""
    import app

    app.wal()
    worker.log.info("walogs %s shared writer open on %s", walogs.IMPLEMENTATION, app.LOG_DIR)
