"""What an OpenAPI 3.1 document must get right beyond its JSON Schema: the semantic checks.

- operationId unique among all operations (paths, webhooks, callbacks);
- path templates well formed, every template variable declared as an `in: path` parameter of each
  operation (its own or its path item's), every declared path parameter used by the template;
- no two paths that differ only in their template variable names (/a/{id} and /a/{name});
- no parameter twice (same name and `in`) in one list, and a parameter $ref that names a parameter;
- tag names unique; and, through SchemaChecks, every Schema Object's defaults and patterns.

Runs after the reference scan (every local $ref resolves, no cycles) and the structural check
(every object in its place has its specified shape), so it can follow references; it still checks
types where a reference leads to an object the structural check saw as something else. Each part
of the document is visited once (a path item shared by several paths once per path), so the cost
is linear in its size. Findings point at the offending member; for a part reached through a
reference, at its place in the document.
"""

from __future__ import annotations

import re
from typing import Any

from checks.openapi_refs import ROOT, Path, RefChecker, pointer_of, ref_pointer
from checks.openapi_schemas import SchemaChecks
from core.domain import Issue

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_METHODS = frozenset(HTTP_METHODS)
PARAMETER_LOCATIONS = frozenset({"query", "header", "path", "cookie"})
_TEMPLATE = re.compile(r"\{([^{}]*)\}")
# Callbacks within callbacks' operations: each level is a separate component, so no reference
# chain limit bounds them; this bounds our recursion.
MAX_CALLBACK_DEPTH = 32
# name, in, pointer of one declared parameter
Param = tuple[str, str, Path]


def semantic_issues(doc: dict[str, Any], refs: RefChecker) -> list[Issue]:
    """Every semantic finding of a structurally valid document whose references all resolve."""
    return _Semantics(doc, refs).run()


class _Semantics:
    def __init__(self, doc: dict[str, Any], refs: RefChecker) -> None:
        self.doc, self.refs = doc, refs
        self.schemas = SchemaChecks(refs)
        self.issues: list[Issue] = []
        self.operation_ids: dict[str, str] = {}  # operationId -> "get /pets", where first seen
        self.templates: dict[str, str] = {}  # path with variables blanked -> the path
        self.walked: set[tuple[int, bool]] = set()  # path items of callbacks and components
        self.callback_depth = 0
        self.ref_paths: dict[str, str] = {}
        self.visited: set[int] = set()  # parameters, headers, bodies, responses: their schemas are walked once

    def run(self) -> list[Issue]:
        self._tags(self.doc.get("tags"))
        self._components(_obj(self.doc.get("components")), (ROOT, "components"))
        for url, item in _obj(self.doc.get("paths")).items():
            if not url.startswith("x-"):
                self._path_item(url, item, ((ROOT, "paths"), url), operations=True, templated=True)
        for name, item in _obj(self.doc.get("webhooks")).items():
            self._path_item(name, item, ((ROOT, "webhooks"), name), operations=True, templated=False)
        return [*self.issues, *self.schemas.issues()]

    def _add(self, code: str, path: Path, message: str) -> None:
        self.issues.append(Issue(code=code, message=message, pointer=pointer_of(path)))

    def _deref(self, node: object, path: Path) -> tuple[Any, Path]:
        """A Reference Object's target and its place; anything else as it is."""
        if type(node) is dict and type(node.get("$ref")) is str:
            ref = node["$ref"]
            if ref not in self.ref_paths:
                self.ref_paths[ref] = ref_pointer(ref)
            return self.refs.resolve(ref), self.ref_paths[ref]
        return node, path

    def _tags(self, tags: object) -> None:
        seen: set[object] = set()
        for index, tag in enumerate(tags if isinstance(tags, list) else []):
            name = tag.get("name") if isinstance(tag, dict) else None
            if name in seen:
                self._add("duplicate_tag", (((ROOT, "tags"), index), "name"), f"Duplicate tag name {name!r}")
            seen.add(name)

    def _components(self, components: dict[str, Any], path: Path) -> None:
        # Visited where they are defined, so an unused component is checked too; a path item or
        # callback here is a template whose operations count where they are referenced from.
        for name, schema in _obj(components.get("schemas")).items():
            self.schemas.root(schema, ((path, "schemas"), name))
        self._parameter_map(components.get("parameters"), (path, "parameters"))
        self._parameter_map(components.get("headers"), (path, "headers"))
        for name, body in _obj(components.get("requestBodies")).items():
            self._request_body(body, ((path, "requestBodies"), name))
        for name, response in _obj(components.get("responses")).items():
            self._response(response, ((path, "responses"), name))
        for name, callback in _obj(components.get("callbacks")).items():
            self._callback(callback, ((path, "callbacks"), name), operations=False)
        for name, item in _obj(components.get("pathItems")).items():
            self._path_item(name, item, ((path, "pathItems"), name), operations=False, templated=False)

    def _path_item(self, url: str, raw: object, key_path: Path, *, operations: bool, templated: bool) -> None:
        item, path = self._deref(raw, key_path)
        if type(item) is not dict:
            return
        if not templated:  # callbacks, webhooks, components: may be reached more than once
            if (id(item), operations) in self.walked:
                return
            self.walked.add((id(item), operations))
        names = self._template(url, key_path) if templated else None
        shared = self._parameters(item.get("parameters"), (path, "parameters"), check=operations)
        if names is not None:
            for name, location, where in shared:
                if location == "path" and name not in names:
                    self._add("path_parameter", where, f"Path parameter {name!r} of {url!r} is not in its template")
        for method, op in item.items():
            if method in _METHODS and type(op) is dict:
                self._operation(url, method, op, (path, method), shared, names, operations)

    def _template(self, url: str, pointer: Path) -> list[str] | None:
        """The template's variable names; None (and a finding) if it is malformed."""
        if "{" not in url and "}" not in url:
            names, blanked = [], url
        else:
            names = _TEMPLATE.findall(url)
            rest = _TEMPLATE.sub("", url)
            if "{" in rest or "}" in rest or not all(names):
                self._add("path_template", pointer, f"path {url!r} has unbalanced braces or an empty {{}}")
                return None
            if len(set(names)) != len(names):
                self._add("path_template", pointer, f"path {url!r} names a template variable twice")
            blanked = _TEMPLATE.sub("{}", url)
        if blanked in self.templates:
            message = f"path {url!r} is the same as {self.templates[blanked]!r}: template names do not tell paths apart"
            self._add("path_conflict", pointer, message)
        else:
            self.templates[blanked] = url
        return names

    def _operation(
        self,
        url: str,
        method: str,
        op: dict[str, Any],
        path: Path,
        shared: list[Param],
        names: list[str] | None,
        counted: bool,
    ) -> None:
        own = self._parameters(op.get("parameters"), (path, "parameters"), check=counted)
        if counted:
            self._operation_id(op.get("operationId"), method, url, path)
            if names is not None:
                self._path_parameters(url, method, path, own, shared, names)
        if "requestBody" in op:
            self._request_body(op["requestBody"], (path, "requestBody"))
        responses = op.get("responses")
        if type(responses) is dict:
            for code, response in responses.items():
                if not code.startswith("x-"):
                    self._response(response, ((path, "responses"), code))
        if "callbacks" in op:
            for name, callback in _obj(op["callbacks"]).items():
                self._callback(callback, ((path, "callbacks"), name), operations=counted)

    def _path_parameters(
        self, url: str, method: str, path: Path, own: list[Param], shared: list[Param], names: list[str]
    ) -> None:
        declared = {name for name, location, _ in own if location == "path"}
        declared.update(name for name, location, _ in shared if location == "path")
        for name in dict.fromkeys(names):
            if name not in declared:
                message = (
                    f"Path parameter {name!r} for {method!r} operation in {url!r} is not declared: "
                    f"add a parameter with in: path to the operation or its path item"
                )
                self._add("path_parameter", path, message)
        for name, location, where in own:
            if location == "path" and name not in names:
                message = f"Path parameter {name!r} for {method!r} operation in {url!r} is not in its template"
                self._add("path_parameter", where, message)

    def _operation_id(self, operation_id: object, method: str, url: str, path: Path) -> None:
        if type(operation_id) is not str:
            return
        first = self.operation_ids.get(operation_id)
        if first is None:
            self.operation_ids[operation_id] = f"{method} {url}"
            return
        message = f"Operation ID {operation_id!r} for {method!r} in {url!r} is not unique: {first} has it too"
        self._add("duplicate_operation_id", (path, "operationId"), message)

    def _parameters(self, params: object, path: Path, *, check: bool) -> list[Param]:
        found: list[Param] = []
        if type(params) is not list:
            return found
        seen: set[tuple[str, str]] = set()
        for index, raw in enumerate(params):
            where = (path, index)
            param, at = self._deref(raw, where)
            if type(param) is dict and id(param) not in self.visited:
                self.visited.add(id(param))
                self._parameter_schemas(param, at)
            name, location = (param.get("name"), param.get("in")) if type(param) is dict else (None, None)
            if type(name) is not str or location not in PARAMETER_LOCATIONS:
                if check:
                    target = raw.get("$ref") if type(raw) is dict else None
                    message = f"parameter {index} refers to {target!r}, which is not a Parameter Object (name and in)"
                    self._add("parameter_ref", where, message)
                continue
            if check and (name, location) in seen:
                self._add("duplicate_parameter", where, f"Duplicate parameter {name!r} (in: {location})")
            seen.add((name, location))
            found.append((name, location, where))
        return found

    def _parameter_schemas(self, param: dict[str, Any], path: Path) -> None:
        """A parameter's or a header's schema, or its content's (a dereferenced object, met for the first time)."""
        if "schema" in param:
            self.schemas.root(param["schema"], (path, "schema"))
        if "content" in param:
            self._content(param["content"], (path, "content"))

    def _parameter_map(self, holders: object, path: Path) -> None:
        """Headers (or component parameters) by name: their schemas."""
        for name, raw in _obj(holders).items():
            header, at = self._deref(raw, (path, name))
            if type(header) is dict and id(header) not in self.visited:
                self.visited.add(id(header))
                self._parameter_schemas(header, at)

    def _request_body(self, raw: object, path: Path) -> None:
        body, path = self._deref(raw, path)
        if type(body) is dict and id(body) not in self.visited:
            self.visited.add(id(body))
            self._content(body.get("content"), (path, "content"))

    def _response(self, raw: object, path: Path) -> None:
        response, path = self._deref(raw, path)
        if type(response) is dict and id(response) not in self.visited:
            self.visited.add(id(response))
            if "headers" in response:
                self._parameter_map(response["headers"], (path, "headers"))
            if "content" in response:
                self._content(response["content"], (path, "content"))

    def _content(self, content: object, path: Path) -> None:
        for media_type, media in _obj(content).items():
            if type(media) is dict:
                where = (path, media_type)
                if "schema" in media:
                    self.schemas.root(media["schema"], (where, "schema"))
                if "encoding" in media:
                    for name, encoding in _obj(media["encoding"]).items():
                        if type(encoding) is dict:
                            self._parameter_map(encoding.get("headers"), (((where, "encoding"), name), "headers"))

    def _callback(self, raw: object, path: Path, *, operations: bool) -> None:
        callback, path = self._deref(raw, path)
        if self.callback_depth >= MAX_CALLBACK_DEPTH:
            if callback:
                self._add("callback_depth", path, f"callbacks nest more than {MAX_CALLBACK_DEPTH} levels deep")
            return
        self.callback_depth += 1
        try:
            for expression, item in _obj(callback).items():
                if not expression.startswith("x-"):
                    self._path_item(expression, item, (path, expression), operations=operations, templated=False)
        finally:
            self.callback_depth -= 1


def _obj(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
