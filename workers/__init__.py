"""The imperative shell: Postgres, Redis, Celery and agent runtimes around the pure orchestrator."""
