"""A plain WSGI events service on walogs, run by gunicorn with several sync workers.

    POST /events              body = the event bytes  -> {"lsn": N} once the event is durable
    GET  /events?since=N      [{"lsn": N, "data": "..."}, ...] in LSN order (limit=M, default 1000)

Every response carries ``X-Worker-Pid``. Appends go to the single writer process
(wal_writer.py) over its Unix socket; reads come from this worker's own
``walogs.WalReader``, opened lazily after the fork. A reader sees exactly the
entries the writer made durable, so an LSN returned by any worker's POST is
readable from every worker as soon as the client has it.

Events are returned as text ("data") when they are valid UTF-8, else as base64
("data_b64").
"""

from __future__ import annotations

import base64
import json
import os
from itertools import islice
from typing import TYPE_CHECKING, cast
from urllib.parse import parse_qs

from wal_writer import EventRejected, OutcomeUnknown, WriterUnavailable, append_event, socket_path_for

import walogs

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from typing import Protocol, TypeVar, TypedDict, Union

    from _typeshed.wsgi import InputStream, StartResponse, WSGIEnvironment

    class _TextItem(TypedDict):
        lsn: int
        data: str

    class _B64Item(TypedDict):
        lsn: int
        data_b64: str

    _Item = Union[_TextItem, _B64Item]

    class _Entries(Iterator[tuple[int, bytes]], Protocol):
        """What WalReader.iter returns: its annotation says Iterator, but the object
        (a ChainReader, compiled or pure Python) also has close()."""

        def close(self) -> None: ...

    _Default = TypeVar("_Default", int, None)

LOG_DIR = os.path.abspath(os.environ.get("WALOGS_EVENTS_DIR", "events-log"))
SOCKET_PATH = socket_path_for(LOG_DIR)
MAX_EVENT_BYTES = int(os.environ.get("WALOGS_EVENTS_MAX_BYTES", str(1024 * 1024)))
DEFAULT_LIMIT, MAX_LIMIT = 1000, 10000

_reader: walogs.WalReader | None = None
_reader_pid: int | None = None


def reader() -> walogs.WalReader:
    """This process's reader: opened on first use, and again after a fork (preload_app)."""
    global _reader, _reader_pid
    if _reader is None or _reader_pid != os.getpid():
        _reader = walogs.WalReader(LOG_DIR)
        _reader_pid = os.getpid()
    return _reader


class HTTPError(Exception):
    def __init__(self, status: str, message: str, **extra: object) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, object] = {"error": message, **extra}
        self.headers: list[tuple[str, str]] = []


def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    status: str
    body: object  # JSON: a dict for POST and errors, a list of items for GET
    headers: list[tuple[str, str]]
    try:
        if environ.get("PATH_INFO") != "/events":
            raise HTTPError("404 Not Found", "no such resource; try /events")
        method = environ["REQUEST_METHOD"]
        if method == "POST":
            status, body, headers = "200 OK", post_event(environ), []
        elif method in ("GET", "HEAD"):
            body, headers = get_events(environ)
            status = "200 OK"
        else:
            error = HTTPError("405 Method Not Allowed", f"{method} is not allowed on /events")
            error.headers.append(("Allow", "GET, HEAD, POST"))
            raise error
    except HTTPError as error:
        status, body, headers = error.status, error.body, error.headers
    payload = json.dumps(body, separators=(",", ":")).encode() + b"\n"
    start_response(status, [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(payload))),
        ("X-Worker-Pid", str(os.getpid())),
        *headers,
    ])
    return [b""] if environ["REQUEST_METHOD"] == "HEAD" else [payload]


def post_event(environ: WSGIEnvironment) -> dict[str, int]:
    data = _read_body(environ)
    if not data:
        raise HTTPError("400 Bad Request", "an event must not be empty")
    try:
        return {"lsn": append_event(SOCKET_PATH, data)}
    except WriterUnavailable as exc:
        # Nothing was sent to the writer: the client may retry as it is.
        error = HTTPError("503 Service Unavailable", str(exc), appended=False)
        error.headers.append(("Retry-After", "1"))
        raise error from exc
    except OutcomeUnknown as exc:
        # Sent, but no LSN came back: the event may be in the log. A client that
        # retries must be ready to see it twice (or make events idempotent).
        raise HTTPError("502 Bad Gateway", str(exc), appended=None) from exc
    except EventRejected as exc:
        raise HTTPError("400 Bad Request", str(exc), appended=False) from exc


def _read_body(environ: WSGIEnvironment) -> bytes:
    stream: InputStream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH") or ""
    if not length:  # chunked: read one byte more than allowed to detect oversize
        data = stream.read(MAX_EVENT_BYTES + 1)
    else:
        try:
            size = int(length)
        except ValueError:
            raise HTTPError("400 Bad Request", "bad Content-Length") from None
        if size > MAX_EVENT_BYTES:
            raise _too_large()
        data = stream.read(size)
        if len(data) != size:
            raise HTTPError("400 Bad Request", "the body is shorter than Content-Length")
    if len(data) > MAX_EVENT_BYTES:
        raise _too_large()
    return data


def _too_large() -> HTTPError:
    return HTTPError("413 Content Too Large", f"an event may be at most {MAX_EVENT_BYTES} bytes")


def get_events(environ: WSGIEnvironment) -> tuple[list[_Item], list[tuple[str, str]]]:
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    since = _int_param(query, "since", None, minimum=1)
    limit = _int_param(query, "limit", DEFAULT_LIMIT, minimum=1)
    limit = min(limit, MAX_LIMIT)
    try:
        log = reader()
    except FileNotFoundError as exc:  # the writer creates the log before workers start
        raise HTTPError("503 Service Unavailable", str(exc)) from exc
    entries: _Entries | None = None
    try:
        entries = cast("_Entries", log.iter(since))  # raises LsnOutOfRangeError at once for a start out of range
        items = [_item(lsn, data) for lsn, data in islice(entries, limit)]
    except walogs.LsnOutOfRangeError as exc:
        first, end = log.first_lsn, log.durable_lsn
        if first is not None and since is not None and since < first:
            raise HTTPError("410 Gone", str(exc), first_lsn=first) from exc
        raise HTTPError("400 Bad Request", str(exc), durable_lsn=end) from exc
    finally:
        if entries is not None:
            entries.close()  # release its file descriptors now, not at garbage collection
    next_since = items[-1]["lsn"] + 1 if items else (since or 1)
    return items, [("X-Next-Since", str(next_since))]


def _int_param(query: dict[str, list[str]], name: str, default: _Default, minimum: int) -> int | _Default:
    values = query.get(name)
    if not values:
        return default
    try:
        value = int(values[-1])
    except ValueError:
        raise HTTPError("400 Bad Request", f"{name} must be an integer") from None
    if value < minimum:
        raise HTTPError("400 Bad Request", f"{name} must be >= {minimum}")
    return value


def _item(lsn: int, data: bytes) -> _Item:
    try:
        return {"lsn": lsn, "data": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"lsn": lsn, "data_b64": base64.b64encode(data).decode("ascii")}
