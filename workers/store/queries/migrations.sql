-- The statements of workers/store/db.py: the bookkeeping of the migrations (schema_migrations, under
-- a transaction-level advisory lock), the readiness ping and the check that a database exists.
-- (ensure_database's CREATE DATABASE is composed there with psycopg.sql: a database name is an
-- identifier, which cannot be a parameter.)

-- name: lock_migrations
-- Serialises migration runs until the end of the transaction: the first applies, the others wait.
SELECT pg_advisory_xact_lock(%(key)s)

-- name: create_schema_migrations
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY, name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now())

-- name: migration_applied
SELECT 1 FROM schema_migrations WHERE version = %(version)s

-- name: record_migration
INSERT INTO schema_migrations (version, name) VALUES (%(version)s, %(name)s)

-- name: schema_migrations_exists
-- A database never migrated has no schema_migrations table: its version is 0.
SELECT to_regclass('schema_migrations') IS NOT NULL

-- name: schema_version
SELECT coalesce(max(version), 0) FROM schema_migrations

-- name: ping
SELECT 1

-- name: database_exists
SELECT 1 FROM pg_database WHERE datname = %(name)s
