"""Plumbing every room may use: clock, ids, errors, logs, in-process metrics, embedded servers."""
