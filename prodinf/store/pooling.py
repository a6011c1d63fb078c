"""Pinging a pooled connection before use only when it has been idle a while."""

from __future__ import annotations

import math
import time
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import InvalidatePoolError

__all__ = ["PING_AFTER_IDLE", "ping_when_idle"]


#: Seconds a connection may sit in the pool and still be handed out without a ping
#: (HikariCP's aliveBypassWindowMs). A runner's transactions follow each other
#: within milliseconds; a ping before each would be one more round trip each.
PING_AFTER_IDLE = 0.5


def ping_when_idle(engine: Engine) -> None:
    """``pool_pre_ping``, for connections back in the pool ``PING_AFTER_IDLE`` or longer.

    A connection that fails its ping invalidates the pool and is replaced, as
    with ``pool_pre_ping``.
    """
    dialect = engine.dialect
    since = "prodinf_idle_since"

    @event.listens_for(engine, "connect")
    def on_connect(_dbapi_conn: Any, record: Any) -> None:
        record.info[since] = time.monotonic()  # fresh: nothing to ping

    @event.listens_for(engine, "checkin")
    def on_checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info[since] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get(since, -math.inf) < PING_AFTER_IDLE:
            return
        try:
            dialect.do_ping(dbapi_conn)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi_conn, None):
                raise InvalidatePoolError() from exc  # the pool reconnects
            raise
