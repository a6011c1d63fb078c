"""Client for remote job services: submit a job over HTTP, then poll it.

A *remote job service* is anything that accepts a job with one HTTP request and
reports its state at a URL. prodinf's own API is the first such service::

    POST {base}/api/v1/jobs  {"kind", "params", "idempotency_key"}
        -> 201 (created) or 200 (the job already made for that key)
           {"id", "url", "status"}
    GET  {url}
        -> 200 {"id", "kind", "status", "progress", "steps", "result", "error", "history"}

Usage from a script::

    with RemoteJobClient("https://prodinf.example.org") as client:
        job = client.submit("rebuild_index", {"shard": 3}, idempotency_key="rebuild-3")
        job = client.wait(job, interval=5, deadline=1800)
        if not job.succeeded:
            raise SystemExit(f"job {job.id} ended {job.status}: {job.document.get('error')}")

What a caller can rely on:

* Connection errors, read errors and 500/502/503/504 answers are retried inside
  each call with exponential backoff (``retries`` times, ``backoff`` seconds
  doubling), for POST too: every submission carries an idempotency key (one is
  generated when the caller gives none), so a retried POST cannot create the
  job twice.
* No call blocks much longer than ``deadline`` seconds: every attempt's
  connect and read timeouts are bounded by the time left, and no retry is
  started that could not begin before the deadline. The worst case is about
  ``deadline`` plus one attempt's ``timeout``.
* Errors come from :mod:`prodinf.exceptions`: :class:`RemoteUnavailable`
  (transient: unreachable, timed out, 5xx once retries are spent, 408/429) and
  :class:`PermanentError` for other 4xx answers, which are never retried -
  :class:`NotFound` for 404, :class:`ValidationError` for 400/422 and
  :class:`Conflict` for 409, each carrying the server's ``message`` (in
  ``details["remote_message"]``) and ``field``.
* Credentials in URLs (``https://user:password@host``) are used for HTTP basic
  auth against the base URL's host only, and the password never appears in an
  error message: it is shown as ``***``.

:func:`fetch_status` is the one-shot variant for polling steps that run their
own retry policy, and :func:`is_pending` decides the generic "status URL"
contract: a JSON document whose ``status`` is one of :data:`PENDING_STATUSES`
is still going; any other status means done.
"""

from prodinf.remote.client import RETRY_STATUSES, RemoteJob, RemoteJobClient
from prodinf.remote.status_url import PENDING_STATUSES, SUCCEEDED_STATUSES, fetch_status, is_pending

__all__ = [
    "PENDING_STATUSES",
    "RETRY_STATUSES",
    "SUCCEEDED_STATUSES",
    "RemoteJob",
    "RemoteJobClient",
    "fetch_status",
    "is_pending",
]
