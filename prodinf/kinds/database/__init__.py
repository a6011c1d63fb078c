"""Database job services: ``healthcheck``, ``copy_database``, ``register_metadata``.

Importing this package registers them.
"""

from prodinf.kinds.database import copy, healthcheck, metadata

__all__ = ["copy", "healthcheck", "metadata"]
