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

Read back by ``list_datasets`` (each dataset with its newest registration, searched
by name and type), ``dataset`` and ``history`` (a dataset's registrations in order):
``GET /api/v1/datasets`` and the ``/datasets`` pages.
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
    or_,
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

    def list_datasets(
        self,
        *,
        text: str | None = None,
        dataset_type: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        """Registered datasets, the most recently registered first, and how many match.

        ``text`` is matched, ignoring case, in the dataset's name or the name of a
        database registered for it (``homo_sapiens`` or ``homo_sapiens_core_115_38``);
        ``dataset_type`` is the type (``core``). Each dataset has its ``name``, ``type``,
        ``registration_count`` and, of its newest registration, ``latest_release``,
        ``latest_database``, ``latest_job_id`` and ``last_registered_at``.
        """
        conditions = []
        if text and text.strip():
            wanted = text.strip().lower()
            in_databases = (
                select(registrations.c.id)
                .where(
                    registrations.c.dataset_id == datasets.c.id,
                    func.lower(registrations.c.database_name).contains(wanted, autoescape=True),
                )
                .exists()
            )
            conditions.append(
                or_(func.lower(datasets.c.name).contains(wanted, autoescape=True), in_databases)
            )
        if dataset_type:
            conditions.append(datasets.c.type == dataset_type)
        query = _summaries().where(*conditions)
        with self.engine.connect() as conn:
            self._ready(conn)
            page = conn.execute(
                query.add_columns(func.count().over().label("matching"))
                .order_by(_LATEST.c.registered_at.desc(), datasets.c.name, datasets.c.type)
                .limit(limit)
                .offset(offset)
            ).all()
            if page:
                total = int(page[0].matching)
            else:
                found = conn.scalar(select(func.count()).select_from(query.subquery()))
                total = int(found or 0)
        return [_dataset_summary(row) for row in page], total

    def dataset_types(self) -> list[str]:
        """The types of the datasets registered, in order."""
        with self.engine.connect() as conn:
            self._ready(conn)
            found = conn.scalars(select(datasets.c.type).distinct().order_by(datasets.c.type))
            return [str(t) for t in found]

    def dataset(self, name: str, dataset_type: str) -> dict[str, Any] | None:
        """One dataset as ``list_datasets`` shows it, or None if it was never registered."""
        with self.engine.connect() as conn:
            self._ready(conn)
            row = conn.execute(
                _summaries().where(datasets.c.name == name, datasets.c.type == dataset_type)
            ).first()
        return _dataset_summary(row) if row is not None else None

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


#: The newest registration of each dataset.
_LATEST = registrations.alias("latest")


def _summaries() -> Any:
    """Each dataset with how many registrations it has and its newest one (``_LATEST``)."""
    per_dataset = (
        select(
            registrations.c.dataset_id,
            func.count().label("registration_count"),
            func.max(registrations.c.id).label("latest_id"),
        )
        .group_by(registrations.c.dataset_id)
        .subquery("per_dataset")
    )
    return select(
        datasets.c.name,
        datasets.c.type,
        per_dataset.c.registration_count,
        _LATEST.c.release,
        _LATEST.c.database_name,
        _LATEST.c.job_id,
        _LATEST.c.registered_at,
    ).select_from(
        datasets.join(per_dataset, per_dataset.c.dataset_id == datasets.c.id).join(
            _LATEST, _LATEST.c.id == per_dataset.c.latest_id
        )
    )


def _dataset_summary(row: Any) -> dict[str, Any]:
    registered: datetime = row.registered_at
    return {
        "name": row.name,
        "type": row.type,
        "registration_count": int(row.registration_count),
        "latest_release": row.release,
        "latest_database": row.database_name,
        "latest_job_id": row.job_id,
        "last_registered_at": registered.isoformat(),
    }


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
