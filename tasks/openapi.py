"""Phase 3, OpenAPI validation of the provider's optional openApiSpec (OpenAPI 3.1 only).

The document is untrusted. openapi-spec-validator 0.9 resolves `$ref`s through
jsonschema-path, whose default handlers fetch http(s):// and read file:// URIs
(a file's content then shows up in the error message), and whose retriever falls
back to urllib for any scheme it has no handler for. It also follows alias chains
recursively, so a -> b -> a ends in RecursionError. Hence every reference is
checked here first (_RefChecker) and a document with a bad one never reaches the
validator; the validator also gets handlers that refuse every URI, as a second
line of defence.

The validator also walks every reference afresh wherever it is used, so a small
document whose schemas each refer ten times to the next ("billion laughs": ten
levels are 10^10 walks) would keep a worker busy for hours. _RefChecker counts
the walks the whole document costs, memoized per target, and refuses a document
above MAX_REF_EXPANSION before the validator sees it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn
from urllib.parse import unquote

from jsonschema.exceptions import ValidationError
from openapi_spec_validator import OpenAPIV31SpecValidator
from prefect import task
from referencing.exceptions import Unresolvable

from core.domain import Issue, Outcome, Phase, PhaseOutcome
from core.settings import Settings, get_settings
from tasks._common import SpecInput, backoff, jitter, run_phase
from tasks.spec_schema import json_pointer

ROOT = "/openApiSpec"
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
# Keywords whose value is a URI reference that a resolver may try to load.
REF_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")
# Longest alias chain (a -> b -> c ...) accepted; also bounds our own recursion.
MAX_REF_CHAIN = 32
# Reference walks the validator may make over the whole document (measured: ~45 us each, so the
# worst accepted document costs a few seconds); and nodes our own count may visit to find out.
MAX_REF_EXPANSION = 100_000
MAX_EXPANSION_VISITS = 2_000_000
# What the library may raise on documents that are structurally valid but semantically
# broken (a $ref to a parameter without "name", an unknown $anchor, a too-deep document).
_LIBRARY_FAILURES = (LookupError, TypeError, ValueError, Unresolvable, RecursionError)


class _RefusingHandlers(dict[str, Any]):
    """Claims every URI scheme so jsonschema-path never falls back to urllib, then refuses it."""

    def __contains__(self, scheme: object) -> bool:
        return True

    def __missing__(self, scheme: str) -> Any:
        return _refuse


def _refuse(uri: str) -> NoReturn:
    raise ValueError(f"refusing to load external reference {uri!r}")


class _OfflineV31Validator(OpenAPIV31SpecValidator):
    resolver_handlers = _RefusingHandlers()


def validate_openapi(spec: dict[str, Any], settings: Settings) -> PhaseOutcome:
    """Validate spec['openApiSpec'] as OpenAPI 3.1 without touching the network or filesystem."""
    doc = spec.get("openApiSpec")
    if doc is None:
        return PhaseOutcome(phase=Phase.OPENAPI_VALIDATION, outcome=Outcome.SKIPPED)
    t0 = time.perf_counter()
    issues = _version_issues(doc)
    if not issues:
        issues = _size_issues(doc, settings) or _RefChecker(doc).issues() or _library_issues(doc)
    return PhaseOutcome.from_issues(
        Phase.OPENAPI_VALIDATION,
        issues,
        paths=_count_paths(doc),
        operations=_count_operations(doc),
        validation_ms=round((time.perf_counter() - t0) * 1000, 1),
    )


def reference_issues(spec: dict[str, Any], settings: Settings) -> list[Issue]:
    """The cheap part of validate_openapi, for the API to run synchronously before storing a spec.

    Version, path count, and the reference scan (remote and file: refs, dangling refs, cycles,
    fan-out): milliseconds and no library, nothing fetched. [] when there is no document.
    """
    doc = spec.get("openApiSpec")
    if doc is None:
        return []
    return _version_issues(doc) or _size_issues(doc, settings) or _RefChecker(doc).issues()


@task(
    name="openapi-validation",
    retries=3,
    retry_delay_seconds=backoff(3),
    retry_jitter_factor=jitter(),
    timeout_seconds=120,
)
def openapi_validation(inp: SpecInput) -> PhaseOutcome:
    """Prefect task of phase 3: validate the embedded OpenAPI document and record the outcome."""
    return run_phase(inp, lambda: validate_openapi(inp.spec, get_settings()), Phase.OPENAPI_VALIDATION)


def _version_issues(doc: object) -> list[Issue]:
    if not isinstance(doc, dict):
        return [Issue(code="openapi_version", message="openApiSpec must be an object", pointer=ROOT)]
    version = doc.get("openapi")
    if isinstance(version, str) and version.startswith("3.1."):
        return []
    declared = f"declares {version!r}" if version is not None else "has no 'openapi' field"
    if "swagger" in doc:
        declared = f"is Swagger {doc['swagger']!r}"
    return [
        Issue(
            code="openapi_version",
            message=f"openApiSpec {declared}; only OpenAPI 3.1.x is accepted",
            pointer=f"{ROOT}/openapi",
            remediation="convert the document to OpenAPI 3.1 and set openapi: '3.1.0'",
        )
    ]


def _size_issues(doc: dict[str, Any], settings: Settings) -> list[Issue]:
    # Phase 2 reports this too; repeated here so a huge document is never fed to the
    # validator (~7 ms per path, see _library_issues).
    count, limit = _count_paths(doc), settings.limits.max_openapi_paths
    if count <= limit:
        return []
    return [Issue(code="size", message=f"openApiSpec has {count} paths, limit {limit}", pointer=f"{ROOT}/paths")]


class _Dangling(Exception):
    pass


class _Cycle(Exception):
    pass


class _TooLong(Exception):
    pass


class _RefChecker:
    """Finds non-local, dangling, cyclic and overlong references, without fetching anything."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        # ref -> (target, alias depth); a long chain is walked once, not once per member.
        self.memo: dict[str, tuple[object, int]] = {}

    def issues(self) -> list[Issue]:
        found = []
        for pointer, keyword, ref in _refs(self.doc):
            problem = self._problem(keyword, ref)
            if problem:
                found.append(Issue(code=problem[0], message=problem[1], pointer=ROOT + pointer))
        return found or self._expansion_issues()

    def _expansion_issues(self) -> list[Issue]:
        """Refuse a document whose references, followed wherever they occur, take too many walks.

        Only called once every reference is local and resolves (issues() found nothing).
        """
        try:
            walks = _Expansion(self).total()
        except _TooLong:
            walks = None
        if walks is not None and walks <= MAX_REF_EXPANSION:
            return []
        message = (
            f"openApiSpec references fan out too much to validate: following every $ref where it is used "
            f"takes more than {MAX_REF_EXPANSION} reference walks"
        )
        remediation = "refer to shared schemas from fewer places, or inline small ones"
        return [Issue(code="ref_expansion", message=message, pointer=ROOT, remediation=remediation)]

    def _problem(self, keyword: str, ref: str) -> tuple[str, str] | None:
        if not ref.startswith("#"):
            return "remote_ref", f"{keyword} {ref!r} is not local; external references are never fetched"
        if not ref.startswith("#/"):
            return None  # "#" (the root) or a plain-name $anchor: nothing to walk
        try:
            self._target(ref, ())
        except _Dangling:
            return "unresolvable_ref", f"{keyword} {ref!r} points to nothing in the document"
        except _Cycle:
            return "ref_cycle", f"{keyword} {ref!r} is part of a reference cycle"
        except _TooLong:
            return "ref_depth", f"{keyword} {ref!r} starts a chain of more than {MAX_REF_CHAIN} references"
        return None

    def _target(self, ref: str, chain: tuple[str, ...]) -> tuple[object, int]:
        """The node `ref` names and how many references deep it lies; raises on a bad chain."""
        if ref in self.memo:
            node, depth = self.memo[ref]
        elif ref in chain:
            raise _Cycle
        elif len(chain) >= MAX_REF_CHAIN:
            raise _TooLong  # also what bounds our recursion
        else:
            node, depth = self._walk(ref, (*chain, ref))
            self.memo[ref] = (node, depth)
        if len(chain) + depth > MAX_REF_CHAIN:
            raise _TooLong
        return node, depth

    def _walk(self, ref: str, chain: tuple[str, ...]) -> tuple[object, int]:
        node, depth = self._deref(self.doc, chain)
        # Same decoding as `referencing`: percent-decode the fragment, then RFC 6901 escapes.
        for token in unquote(ref[2:]).split("/"):
            child = _child(node, token.replace("~1", "/").replace("~0", "~"))
            node, inner = self._deref(child, chain)
            depth = max(depth, inner)
        return node, depth + 1

    def _deref(self, node: object, chain: tuple[str, ...]) -> tuple[object, int]:
        # Mirrors jsonschema-path: a node with a string $ref is replaced by its target,
        # including nodes passed on the way to a deeper pointer.
        if isinstance(node, dict) and isinstance(node.get("$ref"), str) and node["$ref"].startswith("#/"):
            return self._target(node["$ref"], chain)
        return node, 0


class _Expansion:
    """Walks of a document with every local reference followed; each target counted once (memoized).

    cost(target) = sum over the references inside it of 1 + cost(their target); a reference back
    into a target still being counted (recursion, as in a tree schema) costs 1, like the validator,
    which does not walk into a reference it is already inside. Iterative: documents can be deep.
    """

    def __init__(self, checker: _RefChecker) -> None:
        self.checker = checker
        self.cost: dict[str, int] = {}
        self.visits = 0

    def total(self) -> int:
        walks = 0
        for ref in self._local_refs(self.checker.doc):
            walks += 1 + self._cost(ref)
            if walks > MAX_REF_EXPANSION:
                break
        return walks

    def _local_refs(self, node: object) -> list[str]:
        refs = []
        for _pointer, _keyword, ref in _refs(node, self._visit):
            if ref.startswith("#/"):
                refs.append(ref)
        return refs

    def _visit(self) -> None:
        self.visits += 1
        if self.visits > MAX_EXPANSION_VISITS:
            raise _TooLong

    def _cost(self, ref: str) -> int:
        if ref in self.cost:
            return self.cost[ref]
        in_progress: set[str] = {ref}
        # Frames: [target ref, its references, next index, cost so far].
        frames: list[list[Any]] = [[ref, self._local_refs(self.checker.memo[ref][0]), 0, 0]]
        while frames:
            frame = frames[-1]
            target, inner, index, _ = frame
            if index == len(inner):
                frames.pop()
                in_progress.discard(target)
                self.cost[target] = frame[3]
                if frames:
                    frames[-1][3] += 1 + frame[3]
                continue
            frame[2] += 1
            child = inner[index]
            if child in self.cost:
                frame[3] += 1 + self.cost[child]
            elif child in in_progress:
                frame[3] += 1
            else:
                in_progress.add(child)
                frames.append([child, self._local_refs(self.checker.memo[child][0]), 0, 0])
            if frame[3] > MAX_REF_EXPANSION:
                raise _TooLong
        return self.cost[ref]


def _child(node: object, token: str) -> object:
    if isinstance(node, dict) and token in node:
        return node[token]
    if isinstance(node, list) and token.isdigit() and int(token) < len(node):
        return node[int(token)]
    raise _Dangling


def _refs(doc: object, visit: Callable[[], None] | None = None) -> Iterator[tuple[str, str, str]]:
    """(pointer, keyword, value) of every reference, including ones inside example data.

    jsonschema-path resolves a $ref wherever it walks, `default` values included,
    so no part of the document is safe to skip. Iterative: documents can be deep.
    `visit` is called for every container walked (a budget).
    """
    stack: list[tuple[str, object]] = [("", doc)]
    while stack:
        pointer, node = stack.pop()
        if visit is not None:
            visit()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            child = pointer + json_pointer([key])
            if key in REF_KEYWORDS and isinstance(value, str):
                yield child, str(key), value
            elif isinstance(value, dict | list):
                stack.append((child, value))


def _library_issues(doc: dict[str, Any]) -> list[Issue]:
    # Measured cost: ~7 ms per path (about 1 s for a 130 KB document). Acceptable for
    # now with the path limit in front; revisit (e.g. the jsonschema-rs backend) if
    # documents grow.
    validator = _OfflineV31Validator(doc)
    # The two stages are run separately rather than through validator.iter_errors():
    # structural errors carry document paths, semantic ones do not, and iter_errors()
    # is lru_cached on the instance, which would keep every document alive for good.
    # Semantic checks assume a well-formed document, so they only run on one.
    try:
        structural = [_structural_issue(e) for e in validator.schema_validator.iter_errors(doc)]
        if structural:
            return sorted(structural, key=lambda i: i.pointer)
        return [_semantic_issue(e) for e in validator.root_validator(validator.schema_path)]
    except _LIBRARY_FAILURES as exc:
        message = f"openApiSpec cannot be validated: {type(exc).__name__}: {str(exc)[:300]}"
        return [Issue(code="openapi_semantic", message=message, pointer=ROOT)]


def _structural_issue(error: ValidationError) -> Issue:
    return Issue(code="openapi_schema", message=error.message, pointer=ROOT + json_pointer(error.absolute_path))


def _semantic_issue(error: ValidationError) -> Issue:
    # Errors of the library's keyword validators (duplicate operationId, unresolved path
    # parameter, invalid schema object) carry no document location; the message names it.
    return Issue(code="openapi_semantic", message=error.message, pointer=ROOT)


def _count_paths(doc: object) -> int:
    paths = doc.get("paths") if isinstance(doc, dict) else None
    return len(paths) if isinstance(paths, dict) else 0


def _count_operations(doc: object) -> int:
    # Literal path items only; a path item that is a $ref counts as zero operations.
    paths = doc.get("paths") if isinstance(doc, dict) else None
    items = paths.values() if isinstance(paths, dict) else []
    return sum(1 for item in items if isinstance(item, dict) for key in item if key in HTTP_METHODS)
