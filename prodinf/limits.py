"""Size limits on what one submission holds, checked before anything is stored.

A probe stored a 20 MB URL as a job's param (its job document grew to 210 MB and every
read of it was slow). Each kind's params model limits its own fields (``HttpUrlParam``,
``max_length``); :class:`prodinf.engine.service.Jobs` caps every string and the whole
params of any kind, plugins' included. Each refusal is a 400 naming the field. The
portal limits a request's body as a whole (``PRODINF_MAX_REQUEST_BYTES``, 413).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AnyHttpUrl, UrlConstraints

__all__ = ["MAX_PARAMS_BYTES", "MAX_PARAM_TEXT", "MAX_URL_LENGTH", "HttpUrlParam"]

#: Longest URL a param holds (an http(s) URL, a database URI), in characters.
MAX_URL_LENGTH = 8192
#: Longest string (or key) anywhere in a submission's params or notify, in characters,
#: whatever the kind's params model says.
MAX_PARAM_TEXT = 65_536
#: Largest params of one submission, in bytes of their JSON (UTF-8).
MAX_PARAMS_BYTES = 262_144

#: A params field holding an http(s) URL of at most ``MAX_URL_LENGTH`` characters.
HttpUrlParam = Annotated[AnyHttpUrl, UrlConstraints(max_length=MAX_URL_LENGTH)]
