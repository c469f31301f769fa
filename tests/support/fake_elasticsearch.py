"""A stand-in for an Elasticsearch server on 127.0.0.1: records requests, answers as the real one does.

Only the calls the search backend makes: create index, index/delete a document, bulk, refresh,
search (answered with `search_response`). It checks nothing a real server would; it is there
to see what the client sends and how the backend reads the answers and failures.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Recorded:
    method: str
    path: str
    params: dict[str, list[str]]
    body: Any


class FakeElasticsearch:
    def __init__(self, *, fail_status: int | None = None) -> None:
        self.fail_status = fail_status
        self.requests: list[Recorded] = []
        self.indices: set[str] = set()
        self.documents: dict[str, dict[str, Any]] = {}
        self.search_response: dict[str, Any] = {"hits": {"total": {"value": 0, "relation": "eq"}, "hits": []}}
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeElasticsearch:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                fake._handle(self, raw)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def _handle(self, handler: BaseHTTPRequestHandler, raw: bytes) -> None:
        url = urlsplit(handler.path)
        parts = [p for p in url.path.split("/") if p]
        body: Any = None
        if raw and url.path.endswith("/_bulk"):
            body = [json.loads(line) for line in raw.splitlines() if line.strip()]
        elif raw:
            body = json.loads(raw)
        self.requests.append(Recorded(handler.command, url.path, parse_qs(url.query), body))
        if self.fail_status:
            return _reply(handler, self.fail_status, {"error": {"type": "unavailable", "reason": "down"}})
        status, answer = self._answer(handler.command, parts, body)
        _reply(handler, status, answer)

    def _answer(self, method: str, parts: list[str], body: Any) -> tuple[int, dict[str, Any]]:
        if method == "PUT" and len(parts) == 1 and not parts[0].startswith("_"):
            if parts[0] in self.indices:
                error = {"type": "resource_already_exists_exception", "reason": f"index [{parts[0]}] exists"}
                return 400, {"error": error, "status": 400}
            self.indices.add(parts[0])
            return 200, {"acknowledged": True, "index": parts[0]}
        if len(parts) == 3 and parts[1] == "_doc":
            if method == "DELETE":
                found = self.documents.pop(parts[2], None) is not None
                return (200 if found else 404), {"_id": parts[2], "result": "deleted" if found else "not_found"}
            self.documents[parts[2]] = body
            return 201, {"_id": parts[2], "result": "created"}
        if parts[-1] == "_bulk":
            items: list[dict[str, Any]] = []
            for action, source in zip(body[::2], body[1::2], strict=True):
                if "update" in action:  # a partial update: merges into the stored source, if any
                    key = action["update"]["_id"]
                    if key not in self.documents:
                        missing = {"type": "document_missing_exception", "reason": f"[{key}]: document missing"}
                        items.append({"update": {"_id": key, "status": 404, "error": missing}})
                        continue
                    self.documents[key] = {**self.documents[key], **source["doc"]}
                    items.append({"update": {"_id": key, "status": 200, "result": "updated"}})
                    continue
                self.documents[action["index"]["_id"]] = source
                items.append({"index": {"_id": action["index"]["_id"], "status": 201}})
            errors = any(item[kind]["status"] >= 300 for item in items for kind in item)
            return 200, {"errors": errors, "took": 1, "items": items}
        if parts[-1] == "_refresh":
            return 200, {"_shards": {"total": 1, "successful": 1, "failed": 0}}
        if parts[-1] == "_search":
            return 200, self.search_response
        return 404, {"error": {"type": "not_found", "reason": "/".join(parts)}, "status": 404}


def _reply(handler: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("X-Elastic-Product", "Elasticsearch")  # the client refuses servers without it
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
