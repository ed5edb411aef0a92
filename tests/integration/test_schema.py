"""workers/store/schema.sql describes what the migrations build: a database built by the migrations
and an empty one into which schema.sql is loaded have the same schema. So a migration added (or
changed) without its change in schema.sql fails here, with a diff of what differs.

The schemas are compared through catalog queries rather than pg_dump, whose binary on a machine may
be older than the server it would have to dump."""

from __future__ import annotations

import difflib
import re
import uuid
from collections.abc import Iterator
from importlib import resources

import psycopg
import pytest
from psycopg import sql

from tests.conftest import with_database

# Every schema but Postgres's own.
_USER_SCHEMA = (
    "{ns} NOT IN ('pg_catalog', 'information_schema') AND {ns} NOT LIKE 'pg\\_toast%' AND {ns} NOT LIKE 'pg\\_temp\\_%'"
)


def _user(column: str) -> str:
    return _USER_SCHEMA.format(ns=column)


# Objects that belong to an extension are the extension's (listed once, under "extension").
_NOT_FROM_EXTENSION = (
    "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = {catalog}::regclass AND d.objid = {oid}"
    " AND d.deptype = 'e')"
)

# Each query returns (key, description) rows; a section's lines are "<section> <key>: <description>".
# They run with an empty search_path, so that every name they print is schema-qualified.
CATALOG: dict[str, str] = {
    "schema": f"""
        SELECT nspname, '' FROM pg_namespace n WHERE {_user("nspname")}""",
    "extension": """
        SELECT extname, extversion FROM pg_extension""",
    "table": f"""
        SELECT c.oid::regclass::text,
               concat_ws(' ', 'kind=' || c.relkind::text, 'persistence=' || c.relpersistence::text,
                         CASE WHEN c.relrowsecurity THEN 'row-security' END,
                         'options=' || array_to_string(c.reloptions, ','),
                         'partition-by=' || pg_get_partkeydef(c.oid))
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p', 'f') AND {_user("n.nspname")}
           AND {_NOT_FROM_EXTENSION.format(catalog="'pg_class'", oid="c.oid")}""",
    "column": f"""
        SELECT c.oid::regclass::text || '.' || quote_ident(a.attname),
               concat_ws(' ', format_type(a.atttypid, a.atttypmod),
                         CASE WHEN a.attnotnull THEN 'NOT NULL' END,
                         'DEFAULT ' || CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END,
                         'GENERATED ' || CASE WHEN a.attgenerated <> '' THEN pg_get_expr(d.adbin, d.adrelid) END,
                         'IDENTITY ' || nullif(a.attidentity::text, ''),
                         'COLLATE ' || CASE WHEN a.attcollation <> t.typcollation
                                            THEN a.attcollation::regcollation::text END)
          FROM pg_attribute a
          JOIN pg_class c ON c.oid = a.attrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_type t ON t.oid = a.atttypid
          LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE c.relkind IN ('r', 'p', 'f', 'v', 'm') AND a.attnum > 0 AND NOT a.attisdropped
           AND {_user("n.nspname")} AND {_NOT_FROM_EXTENSION.format(catalog="'pg_class'", oid="c.oid")}""",
    # Apart from the columns themselves, so that a column added in the middle shows as one line.
    "column order": f"""
        SELECT c.oid::regclass::text, string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)
          FROM pg_attribute a
          JOIN pg_class c ON c.oid = a.attrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p', 'f', 'v', 'm') AND a.attnum > 0 AND NOT a.attisdropped
           AND {_user("n.nspname")} AND {_NOT_FROM_EXTENSION.format(catalog="'pg_class'", oid="c.oid")}
         GROUP BY c.oid""",
    "index": f"""
        SELECT quote_ident(schemaname) || '.' || quote_ident(indexname), indexdef
          FROM pg_indexes WHERE {_user("schemaname")}""",
    "constraint": f"""
        SELECT c.conrelid::regclass::text || ' ' || quote_ident(c.conname), pg_get_constraintdef(c.oid)
          FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
         WHERE c.conrelid <> 0 AND {_user("n.nspname")}""",
    "sequence": f"""
        SELECT quote_ident(s.schemaname) || '.' || quote_ident(s.sequencename),
               concat_ws(' ', s.data_type, 'start ' || s.start_value, 'increment ' || s.increment_by,
                         'min ' || s.min_value, 'max ' || s.max_value, 'cache ' || s.cache_size,
                         CASE WHEN s.cycle THEN 'cycle' END,
                         (SELECT 'owned by ' || d.refobjid::regclass::text || '.' || quote_ident(a.attname)
                            FROM pg_depend d
                            JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                           WHERE d.classid = 'pg_class'::regclass
                             AND d.objid = (quote_ident(s.schemaname) || '.' || quote_ident(s.sequencename))::regclass
                             AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')))
          FROM pg_sequences s WHERE {_user("s.schemaname")}""",
    "view": f"""
        SELECT quote_ident(schemaname) || '.' || quote_ident(viewname), definition
          FROM pg_views WHERE {_user("schemaname")}
        UNION ALL
        SELECT quote_ident(schemaname) || '.' || quote_ident(matviewname), 'MATERIALIZED ' || definition
          FROM pg_matviews WHERE {_user("schemaname")}""",
    "function": f"""
        SELECT p.oid::regprocedure::text,
               CASE WHEN p.prokind = 'a' THEN 'aggregate' ELSE pg_get_functiondef(p.oid) END
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE {_user("n.nspname")} AND {_NOT_FROM_EXTENSION.format(catalog="'pg_proc'", oid="p.oid")}""",
    "trigger": f"""
        SELECT t.tgrelid::regclass::text || ' ' || quote_ident(t.tgname), pg_get_triggerdef(t.oid)
          FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE NOT t.tgisinternal AND {_user("n.nspname")}""",
    # Types of their own (enums, domains, ranges, free-standing composites), not tables' row types.
    "type": f"""
        SELECT t.oid::regtype::text,
               CASE t.typtype
                 WHEN 'e' THEN 'enum (' || (SELECT string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder)
                                              FROM pg_enum e WHERE e.enumtypid = t.oid) || ')'
                 WHEN 'd' THEN concat_ws(' ', 'domain', format_type(t.typbasetype, t.typtypmod),
                                         CASE WHEN t.typnotnull THEN 'NOT NULL' END, 'DEFAULT ' || t.typdefault,
                                         (SELECT string_agg(pg_get_constraintdef(k.oid), ' ' ORDER BY k.conname)
                                            FROM pg_constraint k WHERE k.contypid = t.oid))
                 WHEN 'r' THEN 'range of ' || (SELECT format_type(r.rngsubtype, NULL)
                                                 FROM pg_range r WHERE r.rngtypid = t.oid)
                 WHEN 'c' THEN 'composite (' || (SELECT string_agg(quote_ident(a.attname) || ' '
                                                                   || format_type(a.atttypid, a.atttypmod),
                                                                   ', ' ORDER BY a.attnum)
                                                   FROM pg_attribute a
                                                  WHERE a.attrelid = t.typrelid AND a.attnum > 0
                                                    AND NOT a.attisdropped) || ')'
                 ELSE 'typtype ' || t.typtype::text
               END
          FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
         WHERE {_user("n.nspname")} AND t.typtype IN ('e', 'd', 'r', 'c', 'm')
           AND (t.typtype <> 'c' OR (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid) = 'c')
           AND {_NOT_FROM_EXTENSION.format(catalog="'pg_type'", oid="t.oid")}""",
}


def _normalize(text: str) -> str:
    """One line per object, whitespace collapsed (function and view bodies span lines)."""
    return re.sub(r"\s+", " ", text).strip()


def describe(url: str) -> list[str]:
    """The schema of the database at ``url``: one sorted line per object, section by section."""
    lines: list[str] = []
    with psycopg.connect(url) as conn:
        conn.execute("SET search_path = ''")
        for section, query in CATALOG.items():
            found = []
            for key, value in conn.execute(query).fetchall():
                line = f"{section} {_normalize(str(key))}"
                found.append(f"{line}: {_normalize(str(value))}" if value else line)
            lines.extend(sorted(found))
    return lines


def schema_diff(expected: list[str], actual: list[str], expected_name: str, actual_name: str) -> str:
    return "\n".join(difflib.unified_diff(expected, actual, expected_name, actual_name, lineterm="", n=0))


def schema_sql() -> str:
    return resources.files("workers.store").joinpath("schema.sql").read_text(encoding="utf-8")


@pytest.fixture
def schema_database(postgres_server_url: str) -> Iterator[str]:
    """A new database (from the server's default template, as the migrated ones are) holding only
    what schema.sql creates."""
    name = f"missions_schema_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        url = with_database(postgres_server_url, name)
        with psycopg.connect(url) as conn:
            conn.execute(schema_sql())
        yield url
    finally:
        with psycopg.connect(postgres_server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_schema_sql_describes_what_the_migrations_build(database_url: str, schema_database: str) -> None:
    migrated = describe(database_url)
    described = describe(schema_database)

    assert "table public.runs: kind=r persistence=p" in migrated, "the catalog queries found no tables"
    if migrated != described:  # the diff alone, rather than pytest's of two long lists
        pytest.fail(
            "workers/store/schema.sql and the migrations build different schemas; bring schema.sql up to"
            " date with workers/store/migrations (- what the migrations build, + what schema.sql builds):\n"
            + schema_diff(migrated, described, "migrations", "schema.sql"),
            pytrace=False,
        )


def test_the_comparison_sees_each_kind_of_object(database_url: str) -> None:
    """The comparison is only worth what it notices: a change of each kind shows in the diff."""
    before = describe(database_url)
    with psycopg.connect(database_url) as conn:
        conn.execute("""
            ALTER TABLE runs ADD COLUMN note text NOT NULL DEFAULT 'n';
            ALTER TABLE attempts ALTER COLUMN tokens_in SET DEFAULT 1;
            ALTER TABLE attempts ALTER COLUMN worker SET NOT NULL;
            ALTER TABLE attempts ALTER COLUMN score TYPE real;
            DROP INDEX timers_due;
            CREATE INDEX timers_due ON timers (due_at DESC);
            ALTER TABLE missions ADD CONSTRAINT missions_status_check CHECK (status <> '');
            CREATE SEQUENCE counter_seq;
            CREATE VIEW active_runs AS SELECT id FROM runs WHERE status = 'active';
            CREATE TYPE mood AS ENUM ('calm', 'busy');
            CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
            CREATE TRIGGER missions_touch BEFORE UPDATE ON missions FOR EACH ROW EXECUTE FUNCTION touch();
        """)
    diff = schema_diff(before, describe(database_url), "before", "after")

    for expected in (
        "+column public.runs.note: text NOT NULL DEFAULT 'n'::text",
        "+column public.attempts.tokens_in: integer NOT NULL DEFAULT 1",
        "+column public.attempts.worker: text NOT NULL",
        "+column public.attempts.score: real",
        "-index public.timers_due: CREATE INDEX timers_due ON public.timers USING btree (due_at)",
        "+index public.timers_due: CREATE INDEX timers_due ON public.timers USING btree (due_at DESC)",
        "+constraint public.missions missions_status_check: CHECK ((status <> ''::text))",
        "+sequence public.counter_seq: bigint start 1",
        "+view public.active_runs:",
        "+type public.mood: enum ('calm', 'busy')",
        "+function public.touch():",
        "+trigger public.missions missions_touch: CREATE TRIGGER missions_touch BEFORE UPDATE ON public.missions",
    ):
        assert expected in diff, f"{expected!r} not in the diff:\n{diff}"
    assert re.search(r"^\+column order public.runs: id, .*, note$", diff, re.MULTILINE), diff


def test_the_sequences_of_serial_columns_are_compared_with_their_owner(database_url: str) -> None:
    lines = describe(database_url)
    assert any(
        line.startswith("sequence public.events_id_seq: bigint") and line.endswith("owned by public.events.id")
        for line in lines
    ), lines
