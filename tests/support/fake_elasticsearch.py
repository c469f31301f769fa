"""A stand-in for an Elasticsearch server on 127.0.0.1: records requests, answers as the real one does.

Only the calls the search backend makes: create index, index/delete a document, bulk, refresh,
search (answered with `search_response`). It checks nothing a real server would; it is there
to see what the client sends and how the backend reads the answers and failures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tests.support.loopback_http import LoopbackHTTPServer, Reply, Request, json_reply

# The client refuses servers that do not say what they are.
_PRODUCT = {"X-Elastic-Product": "Elasticsearch"}


@dataclass
class Recorded:
    method: str
    path: str
    params: dict[str, list[str]]
    body: Any


class FakeElasticsearch(LoopbackHTTPServer):
    def __init__(self, *, fail_status: int | None = None) -> None:
        self.fail_status = fail_status
        self.requests: list[Recorded] = []
        self.indices: set[str] = set()
        self.documents: dict[str, dict[str, Any]] = {}
        self.search_response: dict[str, Any] = {"hits": {"total": {"value": 0, "relation": "eq"}, "hits": []}}
        super().__init__(self._respond, methods=("GET", "PUT", "POST", "DELETE", "HEAD"), name="fake-elasticsearch")

    def _respond(self, request: Request) -> Reply:
        parts = [p for p in request.route.split("/") if p]
        body: Any = None
        if request.body and request.route.endswith("/_bulk"):
            body = [json.loads(line) for line in request.body.splitlines() if line.strip()]
        else:
            body = request.json()
        self.requests.append(Recorded(request.method, request.route, request.query, body))
        if self.fail_status:
            return json_reply(self.fail_status, {"error": {"type": "unavailable", "reason": "down"}}, _PRODUCT)
        status, answer = self._answer(request.method, parts, body)
        return json_reply(status, answer, _PRODUCT)

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
