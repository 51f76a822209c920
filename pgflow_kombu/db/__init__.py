"""Database layer: locating SQL files, named queries, connections, migrations, embedded server."""

__all__: list[str] = []
