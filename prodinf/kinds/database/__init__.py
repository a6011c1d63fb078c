"""Database job services: ``healthcheck``, ``register_metadata`` (and ``copy_database``).

Importing this package registers them.
"""

from prodinf.kinds.database import healthcheck, metadata

__all__ = ["healthcheck", "metadata"]
