"""Structured logs: one JSON object a line, with the request id, flow run id and service id.

The API installs `configure_logging` at start-up; the middleware binds each request with
`bind_request`. Flow-run processes get the same JSON format through a Prefect logging config
written by `write_prefect_logging_config` (`python -m core.logging prefect-config PATH`), which
only swaps the console handler's formatter and leaves Prefect's API handler (the logs shown in
the Prefect UI) as it is.

Importing this module loads only the standard library and python-json-logger: Prefect's own
processes (server, worker, flow runs) import it through their logging config.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter as _BaseJsonFormatter

HANDLER_NAME = "marketplace-console"
# Extras some libraries attach that would only repeat the message (uvicorn's coloured copy).
_SKIPPED_EXTRAS = ("color_message",)
_CONTEXT_KEYS = ("request_id", "flow_run_id", "task_run_id", "service_id")
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
MAX_SERVICE_ID_LENGTH = 64  # a path parameter is the caller's text: ids are 36 characters


@dataclass
class RequestContext:
    """What the log lines of one HTTP request share; `scope` is the live ASGI scope, so the
    route's path parameters (filled in by the router after this is bound) are visible too."""

    request_id: str
    scope: MutableMapping[str, Any] = field(default_factory=dict)

    @property
    def service_id(self) -> str | None:
        value = (self.scope.get("path_params") or {}).get("service_id")
        return value[:MAX_SERVICE_ID_LENGTH] if isinstance(value, str) else None


_request: ContextVar[RequestContext | None] = ContextVar("marketplace_request", default=None)


def valid_request_id(candidate: str) -> bool:
    """A caller's X-Request-ID is kept when it is 1-128 characters of [A-Za-z0-9._-] (safe in logs, tags, headers)."""
    return _VALID_REQUEST_ID.fullmatch(candidate) is not None


def bind_request(request_id: str, scope: MutableMapping[str, Any]) -> Token[RequestContext | None]:
    """Make `request_id` (and the scope's service id) part of every log line until `unbind_request`."""
    return _request.set(RequestContext(request_id, scope))


def unbind_request(token: Token[RequestContext | None]) -> None:
    _request.reset(token)


def current_request_id() -> str | None:
    context = _request.get()
    return context.request_id if context else None


def context_fields() -> dict[str, str]:
    """Request id, flow run id, task run id and service id of the code running now (those known)."""
    fields: dict[str, str] = {}
    request = _request.get()
    if request is not None:
        fields["request_id"] = request.request_id
        if request.service_id:
            fields["service_id"] = request.service_id
    for key, value in _prefect_fields().items():
        fields.setdefault(key, value)  # inside an HTTP request, that request's id stays
    return fields


def _prefect_fields() -> dict[str, str]:
    """Ids from Prefect's run context, without importing Prefect into processes that don't use it."""
    context = sys.modules.get("prefect.context")
    if context is None:
        return {}
    fields: dict[str, str] = {}
    flow_ctx = context.FlowRunContext.get()
    if flow_ctx is not None and flow_ctx.flow_run is not None:
        fields["flow_run_id"] = str(flow_ctx.flow_run.id)
        if (request_id := request_id_of_tags(flow_ctx.flow_run.tags)) is not None:
            fields["request_id"] = request_id
        _add_service_id(fields, flow_ctx.parameters)
    task_ctx = context.TaskRunContext.get()
    if task_ctx is not None:
        fields["task_run_id"] = str(task_ctx.task_run.id)
        if task_ctx.task_run.flow_run_id and "flow_run_id" not in fields:
            fields["flow_run_id"] = str(task_ctx.task_run.flow_run_id)
        _add_service_id(fields, task_ctx.parameters)
    return fields


REQUEST_TAG_PREFIX = "request:"  # the tag a run started for a request carries (storage/repositories/run_requests.py)


def request_id_of_tags(tags: Any) -> str | None:
    """The request id of a run's `request:<id>` tag, if it has one."""
    for tag in tags or ():
        if isinstance(tag, str) and tag.startswith(REQUEST_TAG_PREFIX):
            return tag[len(REQUEST_TAG_PREFIX) :]
    return None


def _add_service_id(fields: dict[str, str], parameters: dict[str, Any] | None) -> None:
    """A flow's `service_id` parameter, or the `service_id` of a task's input model."""
    if "service_id" in fields or not parameters:
        return
    for value in (parameters.get("service_id"), *parameters.values()):
        candidate = value if isinstance(value, str) else getattr(value, "service_id", None)
        if isinstance(candidate, str) and candidate:
            fields["service_id"] = candidate
            return


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(_BaseJsonFormatter):
    """{"timestamp", "level", "logger", "message", request/flow/task run ids, service_id, extras}."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("reserved_attrs", (*RESERVED_ATTRS, *_SKIPPED_EXTRAS))
        kwargs.setdefault("json_ensure_ascii", False)
        super().__init__(*args, **kwargs)

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        log_data["timestamp"] = _timestamp(record)
        log_data["level"] = record.levelname.lower()
        log_data["logger"] = record.name
        log_data["message"] = record.message
        log_data.update(context_fields())
        super().add_fields(log_data, record, message_dict)  # extras (e.g. Prefect's run ids) win


class TextFormatter(logging.Formatter):
    """Human-readable lines for development, with the same context appended as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s - %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = context_fields()
        for key in _CONTEXT_KEYS:
            value = getattr(record, key, None) or context.get(key)
            if value:
                line += f" {key}={_printable(str(value))}"
        return line


def _printable(value: str) -> str:
    """Control characters escaped: a value from a URL cannot start a forged log line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in value)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is when a line is written (as logging's last-resort handler
    does), so replacing sys.stderr (a test's capture, a daemon redirect) never leaves it on a
    closed stream."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, _value: IO[str]) -> None:
        pass


def resolve_format(log_format: str | None, development: bool) -> str:
    """The configured format, or the default: text in development, json everywhere else."""
    if log_format:
        return log_format
    return "text" if development else "json"


def configure_logging(level: str = "INFO", log_format: str = "json", stream: IO[str] | None = None) -> None:
    """Send every logger through one handler on the root logger, in `log_format`.

    Idempotent (the app factory may run several times in one process). Replaces Prefect's console
    handler on the root logger and uvicorn's own handlers, so their lines share the format too;
    other handlers (a test's log capture) stay.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == HANDLER_NAME or type(handler).__name__ == "PrefectConsoleHandler":
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = name != "uvicorn.access"  # the request middleware writes access lines
        uvicorn_logger.setLevel(logging.NOTSET)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the Prefect client logs every call at INFO


def prefect_logging_config(level: str = "INFO") -> dict[str, Any]:
    """Prefect's default logging config with JSON on the console: its API handler stays as it is."""
    import yaml
    from prefect.logging.configuration import DEFAULT_LOGGING_SETTINGS_PATH

    config: dict[str, Any] = yaml.safe_load(DEFAULT_LOGGING_SETTINGS_PATH.read_text(encoding="utf-8"))
    config["formatters"]["marketplace_json"] = {"()": f"{__name__}.JsonFormatter"}
    # A plain stream handler: Prefect's console handler prints through rich, which rewrites text.
    config["handlers"]["console"] = {
        "level": 0,
        "class": "logging.StreamHandler",
        "formatter": "marketplace_json",
        "stream": "ext://sys.stderr",
    }
    config["handlers"]["debug"]["formatter"] = "marketplace_json"
    # Our own loggers at our level (the root stays at WARNING for third-party libraries).
    config["loggers"]["marketplace"] = {"level": level.upper()}
    return config


def write_prefect_logging_config(path: Path, level: str = "INFO") -> Path:
    """Write the config for PREFECT_LOGGING_SETTINGS_PATH (values like ${PREFECT_LOGGING_LEVEL}
    stay templates: Prefect fills them in when it loads the file)."""
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(prefect_logging_config(level), sort_keys=False), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> None:
    """`python -m core.logging prefect-config PATH`: write the Prefect logging config for workers."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "prefect-config":
        raise SystemExit("usage: python -m core.logging prefect-config PATH")
    from core.settings import get_settings

    print(write_prefect_logging_config(Path(args[1]), get_settings().log_level))


if __name__ == "__main__":
    main()
