"""``/api/v1/datasets``: the datasets ``register_metadata`` registered, and each one's
history, registration by registration, with the job that registered it and the events
the registration recorded."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import request, url_for
from flask_restx import Namespace, Resource

from prodinf.exceptions import NotFound
from prodinf.kinds.database.metadata import event_key
from prodinf.portal.api.events import event_url
from prodinf.portal.api.jobs import error, int_arg, job_url
from prodinf.portal.api.openapi import arg, array, nullable, obj, page_args, page_of
from prodinf.portal.current import runtime
from prodinf.redact import redact
from prodinf.store.events import events_by_keys
from prodinf.store.registrations import MetadataStore

__all__ = ["dataset_document", "metadata_store", "ns"]

ns = Namespace("datasets", description="Datasets: what register_metadata recorded, in order")
DATASET = obj(
    {
        "name": {"type": "string"},
        "type": {"type": "string"},
        "registration_count": {"type": "integer"},
        "url": {"type": "string"},
        "page": {"type": "string"},
        "latest_job": nullable({"type": "string"}),
    },
    ["name", "type", "url", "page", "latest_job"],
)
dataset_page = ns.schema_model(
    "DatasetPage",
    page_of(DATASET, next_link=True),
)
dataset_model = ns.schema_model(
    "Dataset",
    {
        **DATASET,
        "properties": {**DATASET["properties"], "registrations": array({"type": "object"})},
        "required": [*DATASET["required"], "registrations"],
    },
)


@contextmanager
def metadata_store() -> Iterator[MetadataStore]:
    """Where registrations are kept (the job store, or ``PRODINF_METADATA_URL``)."""
    store = MetadataStore(runtime().settings)
    try:
        yield store
    finally:
        store.dispose()


def dataset_url(dataset_type: str, name: str) -> str:
    return url_for(
        "api.datasets_dataset_item", dataset_type=dataset_type, name=name, _external=True
    )


def dataset_document(dataset_type: str, name: str) -> dict[str, Any]:
    """A dataset (``list_datasets``' fields) with ``registrations``, oldest first: each
    registration row's fields (``tables`` and ``meta`` included, credentials masked),
    and each of its ``events`` with the ``event_id`` and ``status`` of the event it
    recorded (None if none was recorded here).

    :raises NotFound: naming ``name``, for a dataset never registered.
    """
    with metadata_store() as store:
        found = store.dataset(name, dataset_type)
        history = store.history(name, dataset_type) if found is not None else []
    if found is None:
        raise NotFound(f"no dataset {name!r} of type {dataset_type!r} is registered", field="name")
    registrations = [registration.to_dict() for registration in history]
    keys = [
        event_key(reg["job_id"], index)
        for reg in registrations
        if reg["job_id"]
        for index in range(1, len(reg["events"] or []) + 1)
    ]
    recorded = events_by_keys(runtime().store, keys)
    for reg in registrations:
        events = []
        for index, event in enumerate(reg["events"] or [], 1):
            mine = recorded.get(event_key(reg["job_id"], index)) if reg["job_id"] else None
            events.append(
                {
                    **event,
                    "event_id": mine["id"] if mine else None,
                    "status": mine["status"] if mine else None,
                }
            )
        reg["events"] = events
    return {**found, "registrations": redact(registrations)}


@ns.route("")
class DatasetList(Resource):  # type: ignore[misc]
    @ns.doc(
        params={
            "q": arg(
                "Only datasets whose name, or the name of a database registered for it, "
                "holds this text (any case): homo_sapiens, homo_sapiens_core_115_38"
            ),
            "type": arg("Only datasets of this type (core, variation, ...)"),
            **page_args("Datasets"),
        }
    )
    @ns.response(200, "A page of datasets, the most recently registered first", dataset_page)
    @ns.response(400, "Bad limit or offset", error)
    @ns.response(503, "The store is unavailable", error)
    def get(self) -> dict[str, Any]:
        """Registered datasets, the most recently registered first, a page at a time: each
        one's name, type, number of registrations, and its newest registration's
        release, database, job and time."""
        limit = int_arg("limit", 50, 1, 500)
        offset = int_arg("offset", 0, 0, 10**9)
        with metadata_store() as store:
            items, total = store.list_datasets(
                text=request.args.get("q") or None,
                dataset_type=request.args.get("type") or None,
                limit=limit,
                offset=offset,
            )
        following = None
        if offset + limit < total:
            args = {k: v for k, v in request.args.items() if k != "offset"}
            following = url_for(
                "api.datasets_dataset_list", **args, offset=offset + limit, _external=True
            )
        return {
            "items": [_linked(item) for item in items],
            "total": total,
            "limit": limit,
            "offset": offset,
            "next": following,
        }


@ns.route("/<string:dataset_type>/<string:name>")
class DatasetItem(Resource):  # type: ignore[misc]
    @ns.response(200, "The dataset and its registrations, oldest first", dataset_model)
    @ns.response(404, "No such dataset", error)
    @ns.response(503, "The store is unavailable", error)
    def get(self, dataset_type: str, name: str) -> dict[str, Any]:
        """A dataset and its registrations, oldest first: each with its job, release,
        database (password masked), rows, tables, meta keys, source, comment, time, and
        the events it recorded (links to them)."""
        document = dataset_document(dataset_type, name)
        for reg in document["registrations"]:
            reg["job"] = job_url(reg["job_id"]) if reg["job_id"] else None
            for event in reg["events"]:
                event["url"] = event_url(event["event_id"]) if event["event_id"] else None
        return _linked(document)


def _linked(dataset: dict[str, Any]) -> dict[str, Any]:
    """``dataset`` with its URL, its page and its newest registration's job's URL."""
    latest = dataset.get("latest_job_id")
    return {
        **dataset,
        "url": dataset_url(dataset["type"], dataset["name"]),
        "page": url_for(
            "datasets.dataset", dataset_type=dataset["type"], name=dataset["name"], _external=True
        ),
        "latest_job": job_url(latest) if latest else None,
    }
