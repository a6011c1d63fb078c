"""``python -m prodinf.cli``: the ``prodinf`` command, for when its script is not on PATH."""

from prodinf.cli import main

main()
