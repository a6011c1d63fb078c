"""Where ``email_when_complete.delay()``'s result goes: the job store's database, written
by Celery's result backend. On SQLite, that write waits for the store's other writers
as long as the job store's own writes do, instead of sqlite3's 5 s: under load a worker
gave up after 5 s ("database is locked"), the result was never written, and the
script's ``result.get()`` waited until its timeout.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from prodinf.celery_app import create_celery
from prodinf.config import Settings
from prodinf.store import JobStore, upgrade


def test_a_result_is_written_after_another_writer_held_the_store_past_five_seconds(
    home: Path,
) -> None:
    # Given an embedded store, and another process's connection holding its write lock
    settings = Settings(home=home)
    store = JobStore(settings.store_url)
    upgrade(store)
    store.dispose()
    app = create_celery(settings)
    backend = app.backend
    backend.store_result("warm-up", {"ready": True}, "SUCCESS")  # its tables exist
    holder = sqlite3.connect(home / "prodinf.sqlite", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    released = threading.Timer(5.5, holder.execute, args=("COMMIT",))
    released.start()
    try:
        # When a worker writes a task's result meanwhile
        start = time.monotonic()
        backend.store_result("task-1", {"subject": "run 7 done"}, "SUCCESS")
        waited = time.monotonic() - start
    finally:
        released.join()
        holder.close()

    # Then the write waited for the lock (past sqlite3's 5 s) and the result is there
    assert waited >= 5.0
    assert backend.get_task_meta("task-1")["result"] == {"subject": "run 7 done"}
