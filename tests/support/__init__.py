"""Helpers shared by integration and end-to-end tests (clients, parsers); no fixtures here."""
