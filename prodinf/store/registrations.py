"""Where dataset registrations are kept (``register_metadata``): two tables, in the job
store or elsewhere.

``prodinf_datasets`` has one row per dataset (name and type from the naming
rules); ``prodinf_dataset_registrations`` one row per registration, never updated
or deleted, so the history of a dataset is its registrations in order. Each row
keeps what events are computed from (per-table rows and checksums, the ``meta``
keys, the release) and the events it implied.

In the job store the tables come from migration 0004 (``prodinf db upgrade``);
in a separate ``PRODINF_METADATA_URL`` database they are created on first use.
A registration's ``job_id`` is unique, so a job that runs its step again finds
its own registration instead of writing a second one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Engine,
    NullPool,
    create_engine,
    func,
    insert,
    inspect,
    select,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError

from prodinf.config import Settings, with_driver
from prodinf.exceptions import PermanentError, StoreUnavailable
from prodinf.redact import redact_text
from prodinf.store.datasets import DATASET_TABLES, dataset_registrations, datasets
from prodinf.store.types import utcnow

__all__ = ["MetadataStore", "Registration"]

registrations = dataset_registrations


@dataclass(frozen=True)
class Registration:
    """One registration row, as the API and the kind's result show it."""

    id: int
    dataset: str
    type: str
    job_id: str | None
    values: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        out = {"id": self.id, "dataset": self.dataset, "type": self.type, "job_id": self.job_id}
        out.update(self.values)
        registered = out.get("registered_at")
        if isinstance(registered, datetime):
            out["registered_at"] = registered.isoformat()
        return out


class MetadataStore:
    """Registrations in the job store's database, or in ``settings.metadata_url``."""

    def __init__(self, settings: Settings) -> None:
        self.separate = bool(settings.metadata_url)
        url = settings.metadata_url or settings.store_url
        self.shown_url = redact_text(url)
        connect_args = {"timeout": 30} if url.startswith("sqlite") else {}
        self.engine: Engine = create_engine(
            with_driver(url), poolclass=NullPool, connect_args=connect_args
        )

    def dispose(self) -> None:
        self.engine.dispose()

    def _ready(self, conn: Connection) -> None:
        names = set(inspect(conn).get_table_names())
        if {t.name for t in DATASET_TABLES} <= names:
            return
        if not self.separate:
            raise PermanentError(
                "the job store has no dataset metadata tables: run `prodinf db upgrade`"
            )
        for table in DATASET_TABLES:
            table.create(conn, checkfirst=True)

    def register(
        self,
        *,
        job_id: str,
        dataset: str,
        dataset_type: str,
        values: dict[str, Any],
        events: Callable[[Registration | None], list[dict[str, Any]]],
    ) -> tuple[Registration, bool]:
        """Record a registration for ``job_id`` once; return it and whether it is new.

        ``events(previous)`` computes the events from the dataset's previous
        registration (None when there is none), inside the same transaction.
        """
        try:
            with self.engine.begin() as conn:
                self._ready(conn)
            for _ in range(3):  # a concurrent first registration of the dataset wins a race
                try:
                    with self.engine.begin() as conn:
                        mine = self._by_job(conn, job_id)
                        if mine is not None:
                            return mine, False
                        dataset_id = self._dataset_id(conn, dataset, dataset_type)
                        previous = self._latest(conn, dataset_id)
                        row = {
                            **values,
                            "dataset_id": dataset_id,
                            "job_id": job_id,
                            "events": events(previous),
                            "registered_at": utcnow(),
                        }
                        conn.execute(insert(registrations).values(**row))
                        created = self._by_job(conn, job_id)
                        assert created is not None
                        return created, True
                except IntegrityError:
                    continue
            raise StoreUnavailable("could not record the registration after 3 tries")
        except DBAPIError as exc:
            raise StoreUnavailable(
                f"metadata store {self.shown_url} unavailable: {type(exc.orig).__name__}"
            ) from None

    def history(self, dataset: str, dataset_type: str) -> list[Registration]:
        """Every registration of a dataset, oldest first."""
        with self.engine.connect() as conn:
            self._ready(conn)
            query = self._query().where(datasets.c.name == dataset, datasets.c.type == dataset_type)
            rows = conn.execute(query.order_by(registrations.c.id)).mappings().all()
        return [_registration(row) for row in rows]

    # -- inside a transaction ----------------------------------------------------------

    def _dataset_id(self, conn: Connection, name: str, dataset_type: str) -> int:
        query = select(datasets.c.id).where(
            datasets.c.name == name, datasets.c.type == dataset_type
        )
        found = conn.scalar(query)
        if found is not None:
            return int(found)
        conn.execute(insert(datasets).values(name=name, type=dataset_type, created_at=utcnow()))
        return int(conn.scalar(query) or 0)

    def _latest(self, conn: Connection, dataset_id: int) -> Registration | None:
        newest = (
            select(func.max(registrations.c.id))
            .where(registrations.c.dataset_id == dataset_id)
            .scalar_subquery()
        )
        row = conn.execute(self._query().where(registrations.c.id == newest)).mappings().first()
        return _registration(row) if row is not None else None

    def _by_job(self, conn: Connection, job_id: str) -> Registration | None:
        row = conn.execute(self._query().where(registrations.c.job_id == job_id)).mappings().first()
        return _registration(row) if row is not None else None

    @staticmethod
    def _query() -> Any:
        return select(
            registrations, datasets.c.name.label("dataset_name"), datasets.c.type.label("type")
        ).join(datasets, datasets.c.id == registrations.c.dataset_id)


def _registration(row: Any) -> Registration:
    values = {
        key: row[key]
        for key in (
            "database_uri",
            "database_name",
            "engine",
            "release",
            "assembly",
            "size_bytes",
            "total_rows",
            "tables",
            "meta",
            "source",
            "comment",
            "events",
            "registered_at",
        )
    }
    return Registration(
        id=int(row["id"]),
        dataset=row["dataset_name"],
        type=row["type"],
        job_id=row["job_id"],
        values=values,
    )
