"""Messaging: the only package that talks to Celery, kombu and Redis: the Celery app and its thin
tasks, the broker transport, dispatch, cancel flags, wake-ups and the SSE hub."""
