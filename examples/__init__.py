"""Runnable examples: ``python -m examples.<name>`` (embedded PostgreSQL unless PGFLOW_DATABASE_URL)."""
