"""``POST /api/v1/callbacks/<job id>``: another prodinf reports the end of a job that a
``remote_job`` here waits for, and the waiting step runs again at once.

The callback is the remote job's completion webhook (:mod:`prodinf.webhooks`): its
body is signed with the secret that service signs with (``secret_env`` in
``PRODINF_SERVICES``), and names the remote job. A callback is refused (403) unless
the signature matches and the job it names is the one this job submitted; it only
wakes the step, which then asks the service for the job's state itself, so even a
callback that got through could not decide an outcome. Polling at the service's
``poll_interval`` remains the fallback when a callback is lost.
"""

from __future__ import annotations

import hmac
import json
import logging
from datetime import timedelta
from typing import Any

from flask import request
from flask_restx import Namespace, Resource

from prodinf.engine.messages import Messages, lane
from prodinf.exceptions import BrokerUnavailable, Forbidden, NotFound
from prodinf.kinds.subscriptions import REMOTE_KIND
from prodinf.portal.api.jobs import error
from prodinf.portal.api.openapi import obj
from prodinf.portal.current import runtime
from prodinf.remote.services import ProdinfService, load_services, secret_of
from prodinf.store.children import step_output, wake_step
from prodinf.store.types import utcnow
from prodinf.webhooks import SIGNATURE_HEADER, signature

__all__ = ["ns"]

log = logging.getLogger(__name__)

ns = Namespace("callbacks", description="Other prodinfs report the end of jobs waited for here")
taken = ns.schema_model(
    "CallbackTaken",
    obj({"job_id": {"type": "string"}, "woken": {"type": "boolean"}}, ["job_id", "woken"]),
)


@ns.route("/<string:job_id>")
@ns.doc(security=[])  # no token: a callback is signed (PRODINF_WEBHOOK_SECRET)
class Callback(Resource):  # type: ignore[misc]
    @ns.response(
        200,
        "Taken: `woken` says whether the step was waiting (a running one is marked to look again)",
        taken,
    )
    @ns.response(403, "Refused: the signature or the job does not match", error)
    @ns.response(404, "No job here waits for a callback under this id", error)
    @ns.response(503, "The store is unavailable", error)
    def post(self, job_id: str) -> dict[str, Any]:
        """Wake the step waiting for a remote job, on that job's signed end."""
        rt = runtime()
        with rt.store.transaction() as conn:
            found = step_output(conn, job_id, "submit")
        if found is None or found[0] != REMOTE_KIND:
            raise NotFound(f"no job {job_id!r} waits for a callback", field="job_id")
        _, params, sent = found
        service = load_services(rt.settings.services).by_name.get(params.get("service"))
        secret = secret_of(service) if isinstance(service, ProdinfService) else None
        if secret is None:
            raise Forbidden("this job's service sends no signed callbacks", field="job_id")
        body = request.get_data(cache=False)
        given = request.headers.get(SIGNATURE_HEADER, "")
        if not hmac.compare_digest(signature(secret, body).encode(), given.encode()):
            raise Forbidden(f"the {SIGNATURE_HEADER} signature does not match", field="signature")
        try:
            document = json.loads(body)
            remote = str(document["job"]["id"])
        except (ValueError, KeyError, TypeError):
            raise Forbidden("the body names no job", field="job") from None
        if not sent or remote != str(sent.get("remote_id")):
            raise Forbidden(f"job {job_id} does not wait for job {remote}", field="job")
        now = utcnow()
        due = now + timedelta(seconds=rt.settings.resend_after)
        with rt.store.transaction() as conn:
            queue = wake_step(conn, job_id, "wait", now, due)
        if queue is not None:
            try:
                Messages(rt.store, rt.publish, rt.settings).send(job_id, lane(queue), due)
            except BrokerUnavailable as exc:  # the reconciler sends it at ``due``
                log.warning("callback for job %s: message not sent: %s", job_id, exc)
        return {"job_id": job_id, "woken": queue is not None}
