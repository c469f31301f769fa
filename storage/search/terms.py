"""Turning what a user typed into search terms, and safely into an SQLite FTS5 query."""

from __future__ import annotations

import re
import unicodedata

MAX_TERMS = 32

# PostgreSQL's `english` stop words (tsearch_data/english.stop): dropped on SQLite too, so a
# query like "a model for chat" asks for the same words on both backends.
STOP_WORDS = frozenset(
    """
    i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her
    hers herself it its itself they them their theirs themselves what which who whom this that these
    those am is are was were be been being have has had having do does did doing a an the and but if
    or because as until while of at by for with about against between into through during before after
    above below to from up down in out on off over under again further then once here there when where
    why how all any both each few more most other some such no nor not only own same so than too very
    s t can will just don should now
    """.split()  # noqa: SIM905 (kept as the file reads, to compare with english.stop)
)

# Letters and digits of any script; everything else (quotes, operators, punctuation) separates.
_WORD = re.compile(r"[^\W_]+")


def search_terms(text: str) -> list[str]:
    """The meaningful words of `text`, lower-cased, in order, without stop words or repeats."""
    terms: list[str] = []
    # NFKC first: a decomposed accent (e + U+0301) would otherwise split a word in two.
    for word in _WORD.findall(unicodedata.normalize("NFKC", text).lower()):
        if word not in STOP_WORDS and word not in terms:
            terms.append(word)
    return terms[:MAX_TERMS]


def fts5_query(terms: list[str]) -> str:
    """An FTS5 MATCH expression requiring every term.

    Each term is a double-quoted string, so FTS5 reads it as text, never as syntax (AND, NEAR(,
    column filters, `*`, `^`); inside the quotes the tokenizer still stems it (porter).
    """
    return " ".join('"' + term.replace('"', '""') + '"' for term in terms)
