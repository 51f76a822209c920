"""``python -m pgflow_kombu`` runs the CLI."""

from __future__ import annotations

from pgflow_kombu.cli import main

__all__: list[str] = []

main()
