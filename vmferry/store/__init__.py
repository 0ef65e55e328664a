"""Persistent state: registered hosts (and later jobs), in SQLite or PostgreSQL.

Everything leaves this package as :mod:`vmferry.model` types; ORM rows stay inside.
"""

from vmferry.store.db import Store, default_db_url, open_store

__all__ = ["Store", "default_db_url", "open_store"]
