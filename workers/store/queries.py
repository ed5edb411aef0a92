"""Named SQL statements, kept in the ``.sql`` files of ``workers/store/queries/``.

A file holds any number of statements, each under a header line naming it, optionally followed by
comment lines that describe it; the statement runs up to the next header (or the end of the file)::

    -- name: claim_attempt
    -- Marks a queued attempt running for the worker that claims it; no row when another did first.
    UPDATE attempts SET status = 'running', worker = %(worker)s, claimed_at = now()
     WHERE run_id = %(run_id)s AND task_id = %(task_id)s AND attempt = %(attempt)s AND status = %(was)s
    RETURNING attempt

Names are lowercase identifiers (``[a-z_][a-z0-9_]*``, not a Python keyword), unique across every
file of the folder. Parameters are psycopg named placeholders only, ``%(name)s`` (or ``%(name)b``,
``%(name)t``); a positional ``%s`` is refused, to keep one style. Write ``%%`` for a literal ``%``:
psycopg reads placeholders everywhere in a statement it is given parameters for, quotes and
comments included. Comment lines and blank lines before a file's first header are the file's own
notes; SQL there is an error.

The description lines are kept out of the statement's text (``Query.description`` has them): the
text sent to Postgres, and seen in its logs, ``pg_stat_activity`` and psycopg's prepared-statement
cache, stays the same when only the wording of a description changes, and the hot statements do
not carry their documentation over the wire on every call. Comments inside a statement are kept
as written; comment lines after its last line of SQL are dropped (they introduce what follows).

Every file is read and checked once, at first use; from then on a lookup is a dict lookup. Callers
that run a statement often bind it once, at import::

    CLAIM_ATTEMPT = query("claim_attempt")

A malformed file raises ``QueryFileError`` naming the file and line; an unknown name raises
``UnknownQuery`` (a ``KeyError``) suggesting the names closest to it.

The folder is data, not a package: it must not get an ``__init__.py``, which would make
``workers.store.queries`` that package instead of this module.
"""

from __future__ import annotations

import difflib
import functools
import keyword
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import LiteralString, cast

__all__ = [
    "Queries",
    "Query",
    "QueryFileError",
    "UnknownQuery",
    "load",
    "parse",
    "queries",
    "query",
]

# A header is any comment line starting with "name:"; what follows must then be a valid name.
_HEADER = re.compile(r"^--\s*name:(?P<name>.*)$")
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
# psycopg's placeholders: %% (a literal %), %(name)X or %X. Anything else after a % is left for
# psycopg to judge when the statement runs.
_PLACEHOLDER = re.compile(r"%(?:%|\((?P<name>[^)]*)\)(?P<named_format>[sbt])|(?P<format>[sbt]))")


class QueryFileError(ValueError):
    """A query file that cannot be loaded; ``source`` and ``line`` say where."""

    def __init__(self, source: str, line: int, problem: str) -> None:
        super().__init__(f"{source}:{line}: {problem}")
        self.source = source
        self.line = line
        self.problem = problem


class UnknownQuery(KeyError):
    """No query has the name asked for; the message suggests the closest names."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        known = sorted(known)
        # Names spelled alike, then names that contain the one asked for ("claim" -> claim_attempt).
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        close += [k for k in known if name and name in k and k not in close][: max(0, 5 - len(close))]
        if close:
            hint = "did you mean " + " or ".join(repr(c) for c in close) + "?"
        elif known:
            hint = f"{len(known)} queries are known, none close to it"
        else:
            hint = "no queries are loaded"
        super().__init__(name)
        self.name = name
        self.suggestions = close
        self.message = f"no query named {name!r}: {hint}"

    def __str__(self) -> str:  # KeyError's own repr()s its argument
        return self.message


@dataclass(frozen=True, slots=True)
class Query:
    """One named statement. ``sql`` is the text to execute, without the description lines."""

    name: str
    sql: LiteralString
    description: str
    parameters: tuple[str, ...]  # the named placeholders, in order of first appearance
    source: str
    line: int  # of the header


class Queries(Mapping[str, Query]):
    """Queries by name: ``queries["claim_attempt"]`` is the ``Query``; ``queries.sql(name)`` its
    text. Immutable once built."""

    __slots__ = ("_by_name", "_sql")

    def __init__(self, found: Iterable[Query] = ()) -> None:
        by_name: dict[str, Query] = {}
        for q in found:
            first = by_name.get(q.name)
            if first is not None:
                where = f"{first.source}:{first.line}"
                raise QueryFileError(q.source, q.line, f"duplicate query name {q.name!r} (first defined at {where})")
            by_name[q.name] = q
        self._by_name = by_name
        self._sql = {name: q.sql for name, q in by_name.items()}

    def __getitem__(self, name: str) -> Query:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownQuery(name, self._by_name) from None

    def sql(self, name: str) -> LiteralString:
        """The text of the statement called ``name``."""
        try:
            return self._sql[name]
        except KeyError:
            raise UnknownQuery(name, self._sql) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __repr__(self) -> str:
        return f"Queries({sorted(self._by_name)})"


def _is_comment(line: str) -> bool:
    return line.lstrip().startswith("--")


def _description_line(line: str) -> str:
    return line.lstrip()[2:].removeprefix(" ")


def _parameters(sql: str, source: str, line: int) -> tuple[str, ...]:
    names: dict[str, None] = {}
    for offset, text in enumerate(sql.splitlines()):
        for match in _PLACEHOLDER.finditer(text):
            if match.group("format"):
                raise QueryFileError(
                    source,
                    line + offset,
                    f"positional placeholder {match.group(0)!r}: use named ones, %(name)s (write %% for a literal %)",
                )
            name = match.group("name")
            if name is not None:
                if not name.isidentifier():
                    raise QueryFileError(source, line + offset, f"placeholder name {name!r} is not an identifier")
                names[name] = None
    return tuple(names)


def _block(name: str, header: int, lines: list[str], source: str) -> Query:
    """The query of the lines under one header (``header`` is its line number, from 1)."""
    at = 0
    while at < len(lines) and _is_comment(lines[at]):
        at += 1
    description = "\n".join(_description_line(line) for line in lines[:at])
    body = lines[at:]
    while body and (not body[-1].strip() or _is_comment(body[-1])):
        body.pop()
    first = at
    while body and not body[0].strip():
        body.pop(0)
        first += 1
    if not body:
        raise QueryFileError(source, header, f"query {name!r} has no SQL")
    sql = "\n".join(line.rstrip() for line in body)
    parameters = _parameters(sql, source, header + 1 + first)
    # The statements ship with the package: as trusted as string literals in the code. (mypy takes
    # LiteralString for str, so finds the cast redundant; pyright and psycopg's stubs need it.)
    trusted = cast(LiteralString, sql)  # type: ignore[redundant-cast]
    return Query(name, trusted, description, parameters, source, header)


def parse(text: str, source: str = "<string>") -> list[Query]:
    """The queries of one file's ``text``, in order; ``source`` names the file in errors. Checks
    each block (name, SQL present, placeholders) but not duplicates: ``Queries`` does."""
    found: list[Query] = []
    current: tuple[str, int] | None = None
    lines: list[str] = []
    for number, line in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        header = _HEADER.match(line.strip())
        if header:
            if current is not None:
                found.append(_block(*current, lines, source))
            name = header.group("name").strip()
            if not _NAME.match(name) or keyword.iskeyword(name):
                raise QueryFileError(
                    source, number, f"invalid query name {name!r}: use a lowercase identifier such as claim_attempt"
                )
            current, lines = (name, number), []
        elif current is None:
            if line.strip() and not _is_comment(line):
                raise QueryFileError(source, number, "SQL before the first '-- name: ...' header")
        else:
            lines.append(line)
    if current is not None:
        found.append(_block(*current, lines, source))
    return found


def load(folder: Traversable | Path) -> Queries:
    """The queries of every ``*.sql`` file directly in ``folder`` (files in name order); an empty
    mapping when the folder is missing or holds none."""
    if not folder.is_dir():
        return Queries()
    found: list[Query] = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql") and entry.is_file():
            found.extend(parse(entry.read_text(encoding="utf-8"), entry.name))
    return Queries(found)


@functools.cache
def queries() -> Queries:
    """The package's queries (``workers/store/queries/*.sql``), read on the first call only."""
    return load(resources.files("workers.store") / "queries")


def query(name: str) -> LiteralString:
    """The text of the package's statement called ``name``; ``UnknownQuery`` if there is none."""
    return queries().sql(name)
