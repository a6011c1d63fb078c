"""The built-in kinds. Importing this package registers them."""

from prodinf.kinds import http, notify

__all__ = ["http", "notify"]
