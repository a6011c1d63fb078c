"""The reference: a raw Celery app with the same reliability settings as prodinf's.

``celery -A bench.raw_celery worker`` with BENCH_BROKER_URL (and, for the
filesystem transport, BENCH_BROKER_FOLDER) set by bench/engine.py, which builds
its own publishing app with ``make_app`` for each broker.
"""

from __future__ import annotations

import os

from celery import Celery


def make_app(broker: str, folder: str | None, queue: str) -> Celery:
    app = Celery("bench_raw", broker=broker)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_default_queue=queue,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        broker_transport_options=(
            {
                "data_folder_in": folder,
                "data_folder_out": folder,
                "control_folder": folder,
                "polling_interval": 0.05,
            }
            if folder
            else {"confirm_publish": True}
        ),
    )

    @app.task(name="bench.noop", shared=False)
    def noop() -> None:
        return None

    @app.task(name="bench.done", shared=False)
    def done(path: str) -> None:
        # O_APPEND writes of one short line are atomic: the bench counts lines.
        with open(path, "a", encoding="ascii") as out:
            out.write("x\n")

    return app


app = make_app(
    os.environ.get("BENCH_BROKER_URL", "memory://"),
    os.environ.get("BENCH_BROKER_FOLDER"),
    os.environ.get("BENCH_QUEUE", "bench-raw"),
)
