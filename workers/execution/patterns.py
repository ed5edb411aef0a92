"""Tenant-written regular expressions, run with a time limit and without holding the GIL.

A mission's ``regex`` expectations and JSON-schema ``pattern``/``patternProperties`` are written by
a tenant and run on a worker. With the standard ``re`` module a catastrophic pattern (``^(a|a)*$``
on forty ``a`` and a ``!``) runs for hours *holding the GIL*: every thread of the worker process
stops, heartbeats included, and the other projects' attempts on that worker are declared lost.

So these patterns run in the ``regex`` package instead: ``concurrent=True`` releases the GIL
while a match runs, and ``timeout=`` stops it (``TimeoutError``, here ``PatternTimeout``). That
limit counts the process's CPU time, not the wall clock, so a match that outlives a first short
slice (``FIRST_SLICE``) continues in a thread of its own and the caller waits for it at most the
rest of the time by the wall clock. One ``Budget`` bounds all the matches of one check together (a
schema that matches a slow pattern against a thousand strings still stops at the limit).

``regex`` has one cost ``re`` does not: its compiler copies a counted repeat's minimum number of
times, so nested counts multiply (``(?:(?:a{1000}){1000}){1000}`` is a billion nodes: the worker
runs out of memory before any time limit applies). ``compile_pattern`` first estimates that size
from the pattern's text (``expansion``) and refuses a pattern above ``MAX_EXPANSION`` elements.

For JSON schema, ``validator_class`` gives the validator of the schema's draft with the keywords
that match patterns against the instance replaced by bounded ones: ``pattern``,
``patternProperties``, ``additionalProperties`` and ``unevaluatedProperties`` (the last two match
``patternProperties`` against property names), and keeps the replacement when a subschema or a
``$ref`` target names another draft in ``$schema``. ``format_checker`` compiles ``format: regex``
values (the metaschema's check of the schema's own patterns) with the same engine.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import attrs
import jsonschema
import jsonschema.validators
import regex  # type: ignore[import-untyped,unused-ignore]
from jsonschema.exceptions import ValidationError
from referencing.jsonschema import lookup_recursive_ref

DEFAULT_TIMEOUT = 1.0
FIRST_SLICE = 0.05  # seconds a match may take on the caller's thread before it is watched
MAX_EXPANSION = 100_000  # elements a pattern may compile to (about 0.1 s of compiling)
IGNORECASE: int = regex.IGNORECASE


class PatternTimeout(Exception):
    """A pattern ran out of its time budget."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"pattern took longer than {seconds:g} s")
        self.seconds = seconds


class PatternError(ValueError):
    """A pattern the engine cannot compile."""


@dataclass
class Budget:
    """The time all the matches of one check may take together, from its creation."""

    seconds: float = DEFAULT_TIMEOUT
    deadline: float = field(init=False)

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.seconds

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise PatternTimeout(self.seconds)
        return left


_COUNT = re.compile(r"\{(\d*)(?:,(\d*))?\}")  # a counted repeat: {n}, {m,}, {m,n}, {,n}
_BRACED_ESCAPES = frozenset("pPNxg")  # \p{L}, \N{name}, \x{263a}, \g{1}: braces that are no repeat


def _skip_class(pattern: str, pos: int) -> int:
    """The index after the character class that starts at ``pattern[pos] == "["``."""
    pos += 1
    if pattern.startswith("^", pos):
        pos += 1
    if pattern.startswith("]", pos):
        pos += 1
    while pos < len(pattern):
        if pattern[pos] == "\\":
            pos += 2
        elif pattern[pos] == "]":
            return pos + 1
        else:
            pos += 1
    return pos


def expansion(pattern: str, limit: int = MAX_EXPANSION) -> int:
    """An upper bound (capped just above ``limit``) of the elements ``regex`` compiles ``pattern``
    into: every atom counts 1, a counted repeat multiplies what it repeats by its minimum (what the
    compiler copies), groups and alternatives add up."""
    frames = [[0, 0, 0]]  # per open group: alternatives so far, current branch, last item
    pos, size = 0, len(pattern)
    while pos < size:
        char = pattern[pos]
        item = 1
        if char == "\\":
            pos += 2
            if pattern[pos - 1 : pos] in _BRACED_ESCAPES and pattern.startswith("{", pos):
                end = pattern.find("}", pos)
                pos = end + 1 if end >= 0 else size
        elif char == "[":
            pos = _skip_class(pattern, pos)
        elif char == "(":
            pos += 1
            if pattern.startswith("?#", pos):
                end = pattern.find(")", pos)
                pos = end + 1 if end >= 0 else size
                continue
            frames.append([0, 0, 0])
            continue
        elif char == ")" and len(frames) > 1:
            alternatives, branch, _ = frames.pop()
            item = alternatives + branch
            pos += 1
        elif char == "|":
            frame = frames[-1]
            frame[0], frame[1], frame[2] = frame[0] + frame[1], 0, 0
            pos += 1
            continue
        elif char == "{" and (count := _COUNT.match(pattern, pos)) and (count.group(1) or count.group(2)):
            frame = frames[-1]
            factor = max(int(count.group(1) or 0), 1)
            frame[1] += frame[2] * (factor - 1)
            frame[2] *= factor
            pos = count.end()
            if frame[1] > limit:
                return limit + 1
            continue
        else:
            pos += 1
        frame = frames[-1]
        frame[1] += item
        frame[2] = item
        if frame[1] > limit:
            return limit + 1
    total = 0
    for alternatives, branch, _ in frames:
        total += alternatives + branch
    return min(total, limit + 1)


def compile_pattern(pattern: str, flags: int = 0) -> Any:
    """``pattern`` compiled by the bounded engine; ``PatternError`` when it does not compile or
    would compile to more than ``MAX_EXPANSION`` elements."""
    if not isinstance(pattern, str):
        raise PatternError(f"{pattern!r} is not a string")
    if expansion(pattern) > MAX_EXPANSION:
        raise PatternError(
            f"{pattern[:100]!r} is too large: its counted repeats expand to more than {MAX_EXPANSION} elements"
        )
    try:
        return regex.compile(pattern, flags)
    except (regex.error, TypeError, ValueError, OverflowError, MemoryError, RecursionError) as exc:
        raise PatternError(f"{pattern[:100]!r} does not compile: {exc}") from None


def search(pattern: str, text: str, budget: Budget, flags: int = 0) -> bool:
    """Whether ``pattern`` matches somewhere in ``text``, within ``budget`` and with the GIL released.

    ``PatternTimeout`` when the budget runs out; ``PatternError`` when the pattern does not compile
    (or is too large, see ``compile_pattern``).
    """
    compiled = compile_pattern(pattern, flags)
    remaining = budget.remaining()
    try:  # the quick path: almost every match ends well inside the first slice
        return compiled.search(text, timeout=min(remaining, FIRST_SLICE), concurrent=True) is not None
    except TimeoutError:
        if remaining <= FIRST_SLICE:
            raise PatternTimeout(budget.seconds) from None
    return _watched(compiled, text, budget)


def _watched(compiled: Any, text: str, budget: Budget) -> bool:
    """Match in a thread of its own and wait at most the rest of the budget, by the wall clock.

    The engine's own limit counts the process's CPU time (``clock()``): on a starved machine it
    comes late, so the caller does not wait for it. A thread left behind still stops at that
    limit, and it runs without the GIL."""
    remaining = budget.remaining()
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            outcome["found"] = compiled.search(text, timeout=remaining, concurrent=True) is not None
        except TimeoutError:
            outcome["timeout"] = True
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name="pattern", daemon=True).start()
    if not done.wait(remaining) or "timeout" in outcome:
        raise PatternTimeout(budget.seconds)
    if "error" in outcome:
        raise outcome["error"]
    return bool(outcome["found"])


# --------------------------------------------------------------------------------------------
# JSON schema

_BUDGET: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("pattern_budget", default=None)


@contextlib.contextmanager
def budget(seconds: float) -> Iterator[Budget]:
    """Bound the patterns the bounded JSON-schema validators run inside the block."""
    current = Budget(seconds)
    token = _BUDGET.set(current)
    try:
        yield current
    finally:
        _BUDGET.reset(token)


def _search(pattern: str, text: str) -> bool:
    return search(pattern, text, _BUDGET.get() or Budget(DEFAULT_TIMEOUT))


def _pattern(validator: Any, pattern: str, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _search(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: Mapping[str, Any], instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional(instance: Mapping[str, Any], schema: Mapping[str, Any]) -> Iterator[str]:
    properties = schema.get("properties", {})
    patterns = tuple(schema.get("patternProperties", {}))
    for key in instance:
        if key not in properties and not any(_search(p, key) for p in patterns):
            yield key


def _extras(extras: list[str]) -> str:
    return ", ".join(repr(extra) for extra in extras) + (" were" if len(extras) != 1 else " was")


def _additional_properties(
    validator: Any, additional: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    extras = sorted(set(_additional(instance, schema)), key=str)
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        if "patternProperties" in schema:
            verb = "does" if len(extras) == 1 else "do"
            joined = ", ".join(repr(extra) for extra in extras)
            patterns = ", ".join(repr(p) for p in sorted(schema["patternProperties"]))
            yield ValidationError(f"{joined} {verb} not match any of the regexes: {patterns}")
        else:
            yield ValidationError(f"Additional properties are not allowed ({_extras(extras)} unexpected)")


def _valid(errors: Iterator[ValidationError]) -> bool:
    return next(errors, None) is None


def _evaluated_keys(validator: Any, instance: Mapping[str, Any], schema: Any, legacy: bool) -> list[str]:
    """The property names of ``instance`` some keyword of ``schema`` evaluates (jsonschema's own
    ``find_evaluated_property_keys_by_schema``, draft 2020-12 and, ``legacy``, 2019-09 flavours,
    with patternProperties matched by the bounded engine)."""
    if validator.is_type(schema, "boolean"):
        return []
    keys: list[str] = []

    def follow(resolved: Any) -> None:
        evolved = validator.evolve(schema=resolved.contents, _resolver=resolved.resolver)
        keys.extend(_evaluated_keys(evolved, instance, resolved.contents, legacy))

    if (ref := schema.get("$ref")) is not None:
        follow(validator._resolver.lookup(ref))
    if legacy:
        if "$recursiveRef" in schema:
            follow(lookup_recursive_ref(validator._resolver))
        for keyword in ("properties", "additionalProperties", "unevaluatedProperties"):
            if keyword in schema:
                value = schema[keyword]
                if validator.is_type(value, "boolean") and value:
                    keys += instance.keys()
                elif validator.is_type(value, "object"):
                    keys += [p for p in value if p in instance]
    else:
        if (dynamic := schema.get("$dynamicRef")) is not None:
            follow(validator._resolver.lookup(dynamic))
        properties = schema.get("properties")
        if validator.is_type(properties, "object"):
            keys += properties.keys() & instance.keys()
        for keyword in ("additionalProperties", "unevaluatedProperties"):
            if (subschema := schema.get(keyword)) is not None:
                keys += [k for k, v in instance.items() if _valid(validator.descend(v, subschema))]
    if "patternProperties" in schema:
        for key in instance:
            for pattern in schema["patternProperties"]:
                if _search(pattern, key):
                    keys.append(key)
    if "dependentSchemas" in schema:
        for key, subschema in schema["dependentSchemas"].items():
            if key in instance:
                keys += _evaluated_keys(validator, instance, subschema, legacy)
    for keyword in ("allOf", "oneOf", "anyOf"):
        for subschema in schema.get(keyword, []):
            if _valid(validator.descend(instance, subschema)):
                keys += _evaluated_keys(validator, instance, subschema, legacy)
    if "if" in schema:
        if validator.evolve(schema=schema["if"]).is_valid(instance):
            keys += _evaluated_keys(validator, instance, schema["if"], legacy)
            if "then" in schema:
                keys += _evaluated_keys(validator, instance, schema["then"], legacy)
        elif "else" in schema:
            keys += _evaluated_keys(validator, instance, schema["else"], legacy)
    return keys


def _unevaluated(legacy: bool) -> Any:
    def unevaluated_properties(
        validator: Any, unevaluated: Any, instance: Any, schema: Mapping[str, Any]
    ) -> Iterator[ValidationError]:
        if not validator.is_type(instance, "object"):
            return
        evaluated = _evaluated_keys(validator, instance, schema, legacy)
        bad = [
            key
            for key in instance
            if key not in evaluated
            and not _valid(validator.descend(instance[key], unevaluated, path=key, schema_path=key))
        ]
        if bad:
            if unevaluated is False:
                extras = sorted(bad, key=str)
                yield ValidationError(f"Unevaluated properties are not allowed ({_extras(extras)} unexpected)")
            else:
                yield ValidationError(
                    "Unevaluated properties are not valid under the given schema "
                    f"({_extras(bad)} unevaluated and invalid)"
                )

    return unevaluated_properties


_BOUNDED: dict[type[Any], type[Any]] = {}  # stock validator class -> its bounded class
_BUILDING = threading.RLock()


def validator_class(schema: Any) -> type[Any]:
    """The validator class of ``schema``'s draft (``$schema``, else the latest), its pattern keywords
    bounded (see the module docstring)."""
    return _bounded(jsonschema.validators.validator_for(schema))


def _bounded(stock: type[Any]) -> type[Any]:
    with _BUILDING:
        return _BOUNDED.get(stock) or (stock if stock in _BOUNDED.values() else _build(stock))


def _build(stock: type[Any]) -> type[Any]:
    replacements: dict[str, Any] = {
        "pattern": _pattern,
        "patternProperties": _pattern_properties,
        "additionalProperties": _additional_properties,
        "unevaluatedProperties": _unevaluated(legacy=stock is jsonschema.Draft201909Validator),
    }
    keywords = {k: v for k, v in replacements.items() if k in stock.VALIDATORS}
    bounded: type[Any] = jsonschema.validators.extend(stock, keywords)  # type: ignore[no-untyped-call]
    stock_evolve = bounded.evolve
    init_fields = [(f.name, f.alias) for f in attrs.fields(bounded) if f.init]

    def evolve(self: Any, **changes: Any) -> Any:
        """As jsonschema's ``evolve``, but a subschema naming another draft gets its bounded class."""
        evolved = stock_evolve(self, **changes)
        if type(evolved) in _BOUNDED.values():
            return evolved
        cls = _bounded(type(evolved))
        return cls(**{alias: getattr(evolved, name) for name, alias in init_fields})

    bounded.evolve = evolve
    _BOUNDED[stock] = bounded
    return bounded


def format_checker(stock: Any) -> jsonschema.FormatChecker:
    """``stock``'s format checker (a class's ``FORMAT_CHECKER``) with ``regex`` compiled by the
    bounded engine (so a pattern the engine cannot compile is an invalid schema)."""
    checker = jsonschema.FormatChecker(())
    checker.checkers = dict(stock.checkers)

    def compiles(instance: object) -> bool:
        if isinstance(instance, str):
            compile_pattern(instance)
        return True

    checker.checks("regex", raises=PatternError)(compiles)
    return checker
