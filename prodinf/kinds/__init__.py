"""The built-in kinds. Importing this package registers them."""

from prodinf.kinds import http

__all__ = ["http"]
