"""The references of an untrusted OpenAPI document: local only, resolvable, acyclic, bounded fan-out.

Nothing is ever fetched: a reference that is not local ("#...") is refused, so a `file:` or
`http:` reference can neither leak a file into a message nor make the worker call out. Alias
chains (a -> b -> a) and overlong chains are refused, and so is a document whose references,
followed wherever they are used, fan out beyond MAX_REF_EXPANSION walks ("billion laughs": ten
levels of schemas that each refer ten times to the next are 10^10 walks). That is what a tool
that follows references where it meets them would do with the document (openapi-spec-validator,
code generators, the provider's own tools), so the API refuses such a document before it is stored.

The scan finds references in the compact JSON of the document (orjson, then one regular
expression), which is an order of magnitude faster than walking a large document in Python;
locations (JSON pointers) are computed by a walk only when a reference is at fault.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import unquote

import orjson

from checks.spec_schema import json_pointer
from core.domain import Issue

ROOT = "/openApiSpec"
# Keywords whose value is a URI reference that a resolver may try to load.
REF_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")
# Longest alias chain (a -> b -> c ...) accepted; also bounds our own recursion.
MAX_REF_CHAIN = 32
# Reference walks a document may take, followed wherever it is used (openapi-spec-validator took
# ~45 us each, so the worst accepted document cost it a few seconds); and what our own count may
# spend finding out: containers walked (Python fallback) or bytes serialized (the fast path).
MAX_REF_EXPANSION = 100_000
MAX_EXPANSION_VISITS = 2_000_000
MAX_EXPANSION_BYTES = 100_000_000
# A reference member in compact JSON ('"$ref":"value"'). Inside a string every '"' is escaped, so
# this can only be a member, or the end of a member name that itself ends in '"$ref' (an escaped
# quote): such a false hit only sends the scan to the exact walk, or counts one walk too many.
# (Starting with a literal keeps the regex engine fast: ~2.5 ms for a megabyte.)
_REF_VALUE = re.compile(rb'"\$(?:ref|dynamicRef|recursiveRef)":"([^"\\]*(?:\\.[^"\\]*)*)"')


class _Dangling(Exception):
    pass


class _Cycle(Exception):
    pass


class _TooLong(Exception):
    pass


def serialized_refs(data: bytes) -> list[str]:
    """The value of every string-valued reference member in compact JSON, in document order."""
    return [_text(raw) for raw in _REF_VALUE.findall(data)]


def has_ref(data: bytes) -> bool:
    """Whether compact JSON holds a reference member (or, rarely, a name ending in '"$ref')."""
    return _REF_VALUE.search(data) is not None


def _text(raw: bytes) -> str:
    return str(json.loads(b'"' + raw + b'"')) if b"\\" in raw else raw.decode("utf-8")


def compact_json(node: object) -> bytes | None:
    """Compact JSON of a plain JSON value; None for what orjson refuses (ints past 64 bits, lone
    surrogates, nesting past 255 levels), which callers then handle in Python."""
    try:
        return orjson.dumps(node)
    except orjson.JSONEncodeError:
        return None


class RefChecker:
    """Finds non-local, dangling, cyclic and overlong references, and too much fan-out; fetches nothing.

    After issues() returned [], resolve() gives the target of any local reference in the document.
    """

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        # ref -> (target, alias depth); a long chain is walked once, not once per member.
        self.memo: dict[str, tuple[object, int]] = {}

    def issues(self) -> list[Issue]:
        data = compact_json(self.doc)
        if data is not None:
            # A large document repeats a few hundred references thousands of times: each distinct
            # value is decoded and resolved once. Any problem sends us to the walk, for its pointer.
            counts = Counter(_REF_VALUE.findall(data))
            texts = {raw: _text(raw) for raw in counts}
            if not any(self._problem("$ref", ref) for ref in texts.values()):
                return self._expansion_issues(((texts[raw], n) for raw, n in counts.items()), texts)
        found = []
        for pointer, keyword, ref in _located_refs(self.doc):
            problem = self._problem(keyword, ref)
            if problem:
                found.append(Issue(code=problem[0], message=problem[1], pointer=ROOT + pointer))
        if found:
            return found
        located = Counter(ref for _, _, ref in _located_refs(self.doc))
        return self._expansion_issues(located.items(), {})

    def resolve(self, ref: str) -> object | None:
        """The node a local reference names (after issues() found nothing); None for anchors and the like."""
        if ref == "#":
            return self.doc
        entry = self.memo.get(ref)
        return entry[0] if entry is not None else None

    def _expansion_issues(self, doc_refs: Iterable[tuple[str, int]], texts: dict[bytes, str]) -> list[Issue]:
        """Refuse a document whose references, followed wherever they occur, take too many walks."""
        try:
            walks = _Expansion(self, texts).total(doc_refs)
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
        for token in ref_tokens(ref):
            node, inner = self._deref(_child(node, token), chain)
            depth = max(depth, inner)
        return node, depth + 1

    def _deref(self, node: object, chain: tuple[str, ...]) -> tuple[object, int]:
        # A node with a string $ref is replaced by its target, including nodes passed on the way
        # to a deeper pointer (as jsonschema-path, and most tools, resolve them).
        if isinstance(node, dict) and isinstance(node.get("$ref"), str) and node["$ref"].startswith("#/"):
            return self._target(node["$ref"], chain)
        return node, 0


def ref_tokens(ref: str) -> list[str]:
    """The reference tokens of a local '#/...' reference: percent-decoded, then RFC 6901 unescaped."""
    return [token.replace("~1", "/").replace("~0", "~") for token in unquote(ref[2:]).split("/")]


# A location in the document: a pointer, then (parent, key) pairs built as a walk descends; turned
# into a pointer string only when something is reported there (most locations never are).
Path = str | tuple[Any, str | int]


def pointer_of(path: Path) -> str:
    keys: list[str | int] = []
    while isinstance(path, tuple):
        path, key = path
        keys.append(key)
    return path + json_pointer(reversed(keys))


def ref_pointer(ref: str) -> str:
    """Where a local reference points, as a pointer into the spec (for findings about its target)."""
    return ROOT + json_pointer(ref_tokens(ref)) if ref.startswith("#/") else ROOT


class _Expansion:
    """Walks of a document with every local reference followed; each target counted once (memoized).

    cost(target) = sum over the references inside it of 1 + cost(their target); a reference back
    into a target still being counted (recursion, as in a tree schema) costs 1, as a validator does
    not walk into a reference it is already inside. Iterative: documents can be deep. References
    are counted per distinct value (with how often it occurs), in order of first occurrence.
    """

    def __init__(self, checker: RefChecker, texts: dict[bytes, str]) -> None:
        self.checker = checker
        self.texts = texts  # raw JSON string content -> decoded reference, from the document's scan
        self.cost: dict[str, int] = {}
        self.refs_in: dict[int, list[tuple[str, int]]] = {}  # id(target node) -> local refs inside it, counted
        self.visits = 0
        self.serialized = 0

    def total(self, doc_refs: Iterable[tuple[str, int]]) -> int:
        walks = 0
        for ref, count in doc_refs:
            if ref.startswith("#/"):
                walks += count * (1 + self._cost(ref))
                if walks > MAX_REF_EXPANSION:
                    break
        return walks

    def _local_refs(self, node: object) -> list[tuple[str, int]]:
        if id(node) in self.refs_in:
            return self.refs_in[id(node)]
        data = compact_json(node)
        if data is not None:
            self.serialized += len(data)
            if self.serialized > MAX_EXPANSION_BYTES:
                raise _TooLong
            # A target is a subtree, so its references were all decoded by the document's scan.
            texts = self.texts
            counts = Counter(_REF_VALUE.findall(data))
            refs = [(texts[raw] if raw in texts else _text(raw), n) for raw, n in counts.items() if raw[:2] == b"#/"]
        else:
            located = Counter(ref for _, _, ref in _located_refs(node, self._visit))
            refs = [(ref, n) for ref, n in located.items() if ref.startswith("#/")]
        self.refs_in[id(node)] = refs
        return refs

    def _visit(self) -> None:
        self.visits += 1
        if self.visits > MAX_EXPANSION_VISITS:
            raise _TooLong

    def _cost(self, ref: str) -> int:
        if ref in self.cost:
            return self.cost[ref]
        in_progress: set[str] = {ref}
        # Frames: [target ref, its references (counted), next index, cost so far].
        frames: list[list[Any]] = [[ref, self._local_refs(self.checker.memo[ref][0]), 0, 0]]
        while frames:
            frame = frames[-1]
            target, inner, index, _ = frame
            if index == len(inner):
                frames.pop()
                in_progress.discard(target)
                self.cost[target] = frame[3]
                if frames:
                    parent = frames[-1]
                    parent[3] += parent[1][parent[2] - 1][1] * (1 + frame[3])
                continue
            frame[2] += 1
            child, count = inner[index]
            if child in self.cost:
                frame[3] += count * (1 + self.cost[child])
            elif child in in_progress:
                frame[3] += count
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


def _located_refs(doc: object, visit: Callable[[], None] | None = None) -> Iterator[tuple[str, str, str]]:
    """(pointer, keyword, value) of every reference, including ones inside example data.

    Tools resolve a $ref wherever they walk, `default` values included, so no part of the
    document is safe to skip. Iterative: documents can be deep. `visit` is called for every
    container walked (a budget).
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
