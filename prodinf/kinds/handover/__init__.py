"""Handover: a database handed over to staging is checked, copied, registered and its
events dispatched, stage by stage (:mod:`.kind`); submitted through :mod:`.service`,
which runs the checks of :mod:`.checks` in the request; configured by :mod:`.config`."""

from prodinf.kinds.handover import kind
from prodinf.kinds.handover.config import STAGES, load_handover_config
from prodinf.kinds.handover.service import Handovers

__all__ = ["STAGES", "Handovers", "kind", "load_handover_config"]
