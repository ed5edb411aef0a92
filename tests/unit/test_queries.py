"""The named-query loader (workers/store/queries.py): how a file splits into named statements, and
the mistakes it refuses at load rather than when a statement first runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.store import queries as q
from workers.store.queries import Queries, QueryFileError, UnknownQuery, load, parse

TWO = """\
-- Attempt rows.
-- A file's own notes may mention %s: they belong to no statement.

-- name: claim_attempt
-- A worker takes a queued attempt;
-- a second delivery matches nothing.
UPDATE attempts SET status = 'running', worker = %(worker)s
 WHERE run_id = %(run_id)s AND status = %(was)s   -- the expected status, as a parameter
RETURNING agent

-- name: list_runs
SELECT id FROM runs WHERE mission_id = %(mission_id)s ORDER BY number DESC LIMIT %(limit)s;
"""


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def error(text: str, source: str = "runs.sql") -> QueryFileError:
    with pytest.raises(QueryFileError) as caught:
        Queries(parse(text, source))
    return caught.value


# Names, descriptions and text


def test_each_header_starts_a_named_statement_that_runs_to_the_next() -> None:
    found = parse(TWO, "attempts.sql")

    assert [(x.name, x.source, x.line) for x in found] == [
        ("claim_attempt", "attempts.sql", 4),
        ("list_runs", "attempts.sql", 11),
    ]
    assert found[1].sql == "SELECT id FROM runs WHERE mission_id = %(mission_id)s ORDER BY number DESC LIMIT %(limit)s;"


def test_the_description_is_kept_apart_from_the_sql_and_comments_inside_the_statement_stay() -> None:
    claim = parse(TWO)[0]

    assert claim.description == "A worker takes a queued attempt;\na second delivery matches nothing."
    assert claim.sql == (
        "UPDATE attempts SET status = 'running', worker = %(worker)s\n"
        " WHERE run_id = %(run_id)s AND status = %(was)s   -- the expected status, as a parameter\n"
        "RETURNING agent"
    )
    assert parse(TWO)[1].description == ""


def test_the_parameters_are_listed_once_each_in_order_of_appearance() -> None:
    (found,) = parse("-- name: f\nSELECT %(b)s, %(a)s, %(b)s, %(c)b, %(d)t, '100%%'")

    assert found.parameters == ("b", "a", "c", "d")


def test_blank_and_comment_lines_after_a_statement_are_not_part_of_it() -> None:
    text = "-- name: one\n\nSELECT 1\n\n-- Runs ----------------------------\n\n-- name: two\nSELECT 2\n\n"

    assert [x.sql for x in parse(text)] == ["SELECT 1", "SELECT 2"]


def test_a_blank_line_ends_the_description_and_crlf_and_a_bom_are_read() -> None:
    (found,) = parse("\ufeff-- name: f\r\n-- About f.\r\n\r\n-- Part of the SQL.\r\nSELECT 1\r\n")

    assert (found.description, found.sql) == ("About f.", "-- Part of the SQL.\nSELECT 1")


def test_a_file_without_headers_holds_no_query() -> None:
    assert parse("-- Only notes.\n\n-- More notes.\n") == []
    assert parse("") == []


def test_placeholders_in_a_description_are_not_checked() -> None:
    (found,) = parse("-- name: f\n-- Takes %s? No: %(x)s.\nSELECT 1")
    assert found.parameters == ()


# Mistakes refused at load, naming the file and line


@pytest.mark.parametrize(
    "name", ["", "Claim", "claim-attempt", "1st", "claim attempt", "claim_attempt!", "class", "café"]
)
def test_a_name_that_is_not_a_lowercase_identifier_is_refused(name: str) -> None:
    exc = error(f"-- name: ok\nSELECT 1\n\n-- name: {name}\nSELECT 2\n")

    assert (exc.source, exc.line) == ("runs.sql", 4)
    assert str(exc).startswith("runs.sql:4: invalid query name")
    assert repr(name) in str(exc)


def test_a_duplicate_name_in_one_file_is_refused_with_both_places() -> None:
    exc = error("-- name: f\nSELECT 1\n-- name: g\nSELECT 2\n-- name: f\nSELECT 3\n")

    assert str(exc) == "runs.sql:5: duplicate query name 'f' (first defined at runs.sql:1)"


def test_a_duplicate_name_across_files_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "a.sql", "-- name: f\nSELECT 1\n")
    write(tmp_path, "b.sql", "-- name: g\nSELECT 2\n\n-- name: f\nSELECT 3\n")

    with pytest.raises(QueryFileError, match=r"^b\.sql:4: duplicate query name 'f' \(first defined at a\.sql:1\)$"):
        load(tmp_path)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("-- name: f\n", 1),
        ("-- name: f\n-- Only a description.\n\n", 1),
        ("-- name: g\nSELECT 1\n-- name: f\n\n-- name: h\nSELECT 2\n", 3),
    ],
)
def test_a_header_with_no_sql_under_it_is_refused(text: str, line: int) -> None:
    exc = error(text)

    assert exc.line == line
    assert "has no SQL" in str(exc)


@pytest.mark.parametrize("placeholder", ["%s", "%b", "%t"])
def test_a_positional_placeholder_is_refused_on_its_line(placeholder: str) -> None:
    exc = error(f"-- name: f\n-- About f.\n\nSELECT *\n  FROM runs WHERE id = {placeholder} AND n = %(n)s\n")

    assert exc.line == 5
    assert f"positional placeholder {placeholder!r}" in str(exc)


def test_a_doubled_percent_is_a_literal_not_a_placeholder() -> None:
    (found,) = parse("-- name: f\nSELECT '%%s', 'a%%' LIKE 'a%%', %(x)s")
    assert found.parameters == ("x",)


def test_sql_before_the_first_header_is_refused() -> None:
    exc = error("-- Notes.\nSELECT 1;\n-- name: f\nSELECT 2\n")

    assert (exc.line, str(exc)) == (2, "runs.sql:2: SQL before the first '-- name: ...' header")


# Lookups


def test_a_missing_name_is_a_key_error_that_suggests_close_names() -> None:
    found = Queries(parse(TWO))

    with pytest.raises(UnknownQuery) as caught:
        found["claim_atempt"]
    assert isinstance(caught.value, KeyError)
    assert str(caught.value) == "no query named 'claim_atempt': did you mean 'claim_attempt'?"
    assert caught.value.suggestions == ["claim_attempt"]

    with pytest.raises(KeyError, match="did you mean 'claim_attempt'"):
        found.sql("claim")  # a part of a name finds it too
    with pytest.raises(KeyError, match=r"^no query named 'zzz': 2 queries are known, none close to it$"):
        found.sql("zzz")
    with pytest.raises(KeyError, match="no queries are loaded"):
        Queries().sql("claim_attempt")


def test_queries_is_a_read_only_mapping_of_name_to_query() -> None:
    found = Queries(parse(TWO))

    assert list(found) == ["claim_attempt", "list_runs"] and len(found) == 2
    assert "list_runs" in found and "nope" not in found
    assert found["list_runs"].sql == found.sql("list_runs")
    assert found.get("nope") is None
    assert not hasattr(found, "__setitem__")


# Folders


def test_a_folder_loads_its_sql_files_in_name_order_and_nothing_else(tmp_path: Path) -> None:
    write(tmp_path, "b.sql", "-- name: from_b\nSELECT 2\n")
    write(tmp_path, "a.sql", "-- name: from_a\nSELECT 1\n")
    write(tmp_path, "notes.txt", "-- name: not_sql\nSELECT 3\n")
    write(tmp_path / "nested", "c.sql", "-- name: nested\nSELECT 4\n")

    found = load(tmp_path)

    assert list(found) == ["from_a", "from_b"]
    assert found["from_b"].source == "b.sql"


def test_a_missing_or_empty_folder_gives_no_queries(tmp_path: Path) -> None:
    assert len(load(tmp_path / "missing")) == 0
    assert len(load(tmp_path)) == 0


def test_the_package_queries_load_once_and_a_lookup_returns_the_text() -> None:
    """Whatever workers/store/queries/ holds (nothing yet, or the real files) loads without error."""
    loaded = q.queries()

    assert q.queries() is loaded
    for name in loaded:
        assert q.query(name) is loaded[name].sql
    with pytest.raises(UnknownQuery):
        q.query("no_such_query_anywhere")
