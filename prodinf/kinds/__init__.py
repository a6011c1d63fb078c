"""The built-in kinds. Importing this package registers them."""

from prodinf.kinds import database, http, notify

__all__ = ["database", "http", "notify"]
