"""Imported first by each benchmark run as ``python bench/<name>.py``.

Run as a script, a benchmark's folder heads ``sys.path``, where ``bench/email.py``
and ``bench/copy.py`` would shadow the standard library's ``email`` and ``copy``
for everything imported after. This drops that folder and puts the checkout's
root in its place, so ``prodinf``, ``tests`` and ``bench`` import as packages.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["ROOT"]

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

#: The checkout's root.
ROOT = Path(_HERE).parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
