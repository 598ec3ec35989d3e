"""The edge's own log lines (`log.format`): text or one JSON object a line, on standard error,
written through a `LineWriter` so that logging never blocks the event loop.

Owns the line formats and the process's logging setup. Events add fields to a line with
`extra={"fields": {...}}`; JSON lines carry them as keys, text lines say them in the message.
It knows nothing of what is logged.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from proxy.logwriter import LineWriter, stderr_writer

TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
# What a record has of its own: anything else in its __dict__ came from `extra`.
_RECORD_KEYS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


# ".000" to ".999": the fraction of a second (or of a millisecond) as lines write it, made once.
THOUSANDTHS = tuple(f".{n:03d}" for n in range(1000))


def second_text(second: int) -> str:
    """RFC 3339 UTC up to the second (`2026-11-28T17:00:00`) of a `time.time()` second."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


class Timestamps:
    """RFC 3339 UTC with milliseconds (`2026-11-28T17:00:00.123Z`) for a `time.time()`; the
    part up to the second is made once a second."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, now: float) -> str:
        ms = int(now * 1000)
        second = ms // 1000
        if second != self._second:
            self._second = second
            self._prefix = second_text(second)
        return self._prefix + THOUSANDTHS[ms - second * 1000] + "Z"


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "msg", ...the event's fields}`, one object a line."""

    def __init__(self) -> None:
        super().__init__()
        self._ts = Timestamps()

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": self._ts(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        fields = record.__dict__.get("fields")
        if isinstance(fields, dict):
            for key, value in fields.items():
                line.setdefault(key, value)
        for key, value in record.__dict__.items():
            if key not in _RECORD_KEYS and key != "fields":
                line.setdefault(key, value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class WriterHandler(logging.Handler):
    """A logging handler that hands formatted lines to a LineWriter."""

    def __init__(self, writer: LineWriter, formatter: logging.Formatter) -> None:
        super().__init__()
        self.writer = writer
        self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - a bad log call must never take the caller down
            self.handleError(record)
            return
        self.writer.write(line + "\n")

    def close(self) -> None:
        self.writer.close()
        super().close()


_handler: WriterHandler | None = None


def configure(log_format: str, level: str) -> None:
    """The process's edge lines: `log_format` "text" or "json" at `level`, to standard error."""
    global _handler
    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    handler = WriterHandler(stderr_writer(), formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    _handler = handler


def start_background() -> None:
    """From now on the edge's lines are written by a thread (call after forking workers)."""
    if _handler is not None:
        _handler.writer.start()


def stop_background() -> None:
    """Write what is pending; lines are written directly again."""
    if _handler is not None:
        _handler.writer.close()
