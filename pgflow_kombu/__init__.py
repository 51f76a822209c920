"""pgflow-kombu."""
