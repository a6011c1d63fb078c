"""The jobs list page (``/``, also ``/jobs``): search, sort and page the jobs.

The filters of ``GET /api/v1/jobs`` (``api/jobs.py``'s ``job_search``) under the same
names, except the creation range: ``from`` and ``to`` are dates (or times), and ``to``
takes all of its day. Every link on the page (paging, sorting by a column, the status
counts) keeps the search.
"""

from __future__ import annotations

from typing import Any

from flask import render_template, request, url_for
from flask.typing import ResponseReturnValue

from prodinf.portal.api.jobs import STATUSES, cursor_args, int_arg, job_search
from prodinf.portal.current import runtime
from prodinf.status import TERMINAL
from prodinf.store.search import COUNT_LIMIT, SORTS, human_duration

__all__ = ["FILTERS", "jobs_page"]

#: The page's search inputs, by name: what each finds.
FILTERS = ("kind", "status", "id", "q", "submitted_by", "from", "to")
#: The columns a header link sorts by, with the order a first click gives.
SORTABLE = {"created": "desc", "updated": "desc", "duration": "desc"}


def counted(n: int) -> str:
    """A count of jobs as a page shows it: ``10,000+`` past :data:`COUNT_LIMIT`."""
    return f"{COUNT_LIMIT:,}+" if n > COUNT_LIMIT else f"{n:,}"


def jobs_page(page_size: int, refresh_seconds: int) -> ResponseReturnValue:
    """The jobs that match the search in the request's args, a page of ``page_size``
    (unless ``?limit=``), reloading every ``refresh_seconds`` while one of them is active."""
    search = job_search(request.args, after="from", before="to", whole_days=True)
    limit = int_arg("limit", page_size, 1, 500)
    offset = int_arg("offset", 0, 0, 10**9)
    after, before = cursor_args()
    rt = runtime()
    found = rt.store.find_jobs(**search, limit=limit, offset=offset, after=after, before=before)
    items, total = found["items"], found["total"]
    counts = rt.store.counts(limit=COUNT_LIMIT)
    kinds = [k.name for k in rt.registry.all()]
    kind = search["kind"]
    if kind is not None and kind not in kinds:  # jobs of a kind whose plugin is gone
        kinds.append(kind)
    typed = {name: request.args.get(name, "").strip() for name in FILTERS}
    sort, order = search["sort"], search["order"]

    def page(**changes: Any) -> str:
        """This page's URL with ``changes`` (None removes an arg)."""
        args: dict[str, Any] = {
            **typed,
            "sort": sort if sort != "created" else None,
            "order": order if order != "desc" else None,
            "limit": limit if limit != page_size else None,
            **changes,
        }
        return url_for("web.jobs", **{k: v for k, v in args.items() if v not in (None, "")})

    def sort_link(column: str) -> str:
        """Sort by ``column``; on the column sorted by, the other way round."""
        turned = ("asc" if order == "desc" else "desc") if column == sort else SORTABLE[column]
        return page(sort=column, order=turned, offset=None, after=None, before=None)

    return render_template(
        "jobs.html",
        jobs=items,
        total=total,
        counts={s: counted(n) for s, n in counts.items()},
        all_count=counted(sum(counts.values())),
        statuses=STATUSES,
        kinds=kinds,
        kind=kind,
        status=search["status"],
        typed=typed,
        searched=any(typed.values()),
        sort=sort,
        order=order,
        sorts=SORTS,
        total_text=f"{total:,}" if found["total_exact"] else f"at least {total:,}",
        # where this page is: known when it was reached by offset, not by a cursor
        first=offset + 1 if items and not (after or before) else None,
        last=offset + len(items),
        shown=len(items),
        previous=page(before=found["previous"]) if found["previous"] else None,
        following=page(after=found["next"]) if found["next"] else None,
        page=page,
        sort_link=sort_link,
        duration=human_duration,
        refresh=refresh_seconds if any(j["status"] not in TERMINAL for j in items) else None,
    )
