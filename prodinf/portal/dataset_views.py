"""Web pages for datasets: the registered datasets (``/datasets``) and one dataset's
history, registration by registration (``/datasets/<type>/<name>``).

What ``GET /api/v1/datasets`` answers, as pages: the same search and paging, links to
the job that made each registration and to the events it recorded.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template, request, url_for
from flask.typing import ResponseReturnValue

from prodinf.portal.api.datasets import dataset_document, metadata_store
from prodinf.portal.api.jobs import int_arg
from prodinf.portal.views import PAGE_SIZE

__all__ = ["blueprint"]

blueprint = Blueprint("datasets", __name__)


@blueprint.get("/datasets")
def datasets() -> ResponseReturnValue:
    """Datasets, the most recently registered first, searched by name and type."""
    text = request.args.get("q", "").strip()
    dataset_type = request.args.get("type", "").strip()
    limit = int_arg("limit", PAGE_SIZE, 1, 500)
    offset = int_arg("offset", 0, 0, 10**9)
    with metadata_store() as store:
        items, total = store.list_datasets(
            text=text or None, dataset_type=dataset_type or None, limit=limit, offset=offset
        )
        types = store.dataset_types()
    if dataset_type and dataset_type not in types:
        types.append(dataset_type)

    def page(**changes: Any) -> str:
        args: dict[str, Any] = {
            "q": text,
            "type": dataset_type,
            "limit": limit if limit != PAGE_SIZE else None,
            **changes,
        }
        return url_for("datasets.datasets", **{k: v for k, v in args.items() if v})

    return render_template(
        "datasets.html",
        datasets=items,
        total=total,
        text=text,
        type=dataset_type,
        types=types,
        first=offset + 1 if items else 0,
        last=offset + len(items),
        previous=page(offset=max(0, offset - limit) or None) if offset > 0 else None,
        following=page(offset=offset + limit) if offset + limit < total else None,
    )


@blueprint.get("/datasets/<dataset_type>/<name>")
def dataset(dataset_type: str, name: str) -> ResponseReturnValue:
    """A dataset's registrations, newest first, each with its job and its events."""
    document = dataset_document(dataset_type, name)
    return render_template(
        "dataset.html",
        dataset=document,
        registrations=document["registrations"][::-1],
        size=human_size,
    )


def human_size(size: int | None) -> str:
    """Bytes as ``512 B``, ``1.5 MB``, ``12.0 GB``; empty when unknown."""
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return ""  # not reached
