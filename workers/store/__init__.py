"""Persistence: the only package that talks to Postgres (psycopg). Every SQL statement of the
product lives here, with the migrations and the current schema."""
