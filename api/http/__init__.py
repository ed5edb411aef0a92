"""The HTTP server: the Flask app factory, the /v1 routes, their schemas and rendering, errors,
OpenAPI, SSE and /metrics."""
