"""An events service: every gunicorn worker appends to one walogs log itself.

    POST /events                    body = a UTF-8 event -> {"lsn": N} once it is durable
    GET  /events?since=N&limit=M    [{"lsn": N, "data": "..."}, ...] in LSN order

Each worker opens its own shared writer (``Wal.open(..., shared=True)``)
after the fork; appends from all workers get unique, contiguous LSNs and
share fdatasync calls. Reads go through a ``WalReader``.
"""

from __future__ import annotations

import atexit
import json
import os
from itertools import islice
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

import walogs

if TYPE_CHECKING:
    from collections.abc import Iterable

    from _typeshed.wsgi import StartResponse, WSGIEnvironment

LOG_DIR = os.path.abspath(os.environ.get("WALOGS_EVENTS_DIR", "events-log"))
_wals: dict[int, walogs.Wal] = {}  # by process id


def wal() -> walogs.Wal:
    """This process's shared writer, opened on first use. A handle from before a fork
    (``--preload``) cannot write in the child, so each worker opens its own."""
    pid = os.getpid()
    if pid not in _wals:
        _wals[pid] = walogs.Wal.open(LOG_DIR, shared=True)
        atexit.register(_wals[pid].close)
    return _wals[pid]


def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    method, query = environ["REQUEST_METHOD"], parse_qs(environ.get("QUERY_STRING", ""))
    body: object
    try:
        if environ.get("PATH_INFO") != "/events":
            status, body = "404 Not Found", {"error": "try /events"}
        elif method == "POST":
            data = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            data.decode()  # UnicodeDecodeError (a ValueError) if it is not text
            status, body = "200 OK", {"lsn": wal().append(data)}  # durable when it returns
        elif method == "GET":  # a reader sees durable entries only, whoever wrote them
            since, limit = int(query.get("since", ["1"])[0]), int(query.get("limit", ["1000"])[0])
            entries = islice(walogs.WalReader(LOG_DIR).iter(since), max(0, limit))
            status, body = "200 OK", [{"lsn": lsn, "data": data.decode()} for lsn, data in entries]
        else:
            status, body = "405 Method Not Allowed", {"error": "GET or POST"}
    except (ValueError, walogs.LsnOutOfRangeError) as exc:
        status, body = "400 Bad Request", {"error": str(exc)}
    payload = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload))),
                            ("X-Worker-Pid", str(os.getpid()))])
    return [payload]
