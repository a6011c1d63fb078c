"""A plugin adding a Python healthcheck, loaded through ``PRODINF_PLUGINS`` like a user's."""

from __future__ import annotations

from prodinf.kinds.database.checks import CheckContext, Finding, healthcheck


@healthcheck("genes_have_transcripts", group="core", applies_to=["core"])
def genes_have_transcripts(ctx: CheckContext) -> Finding:
    """Every gene has at least one transcript."""
    return ctx.problems(
        "SELECT g.gene_id, g.stable_id FROM gene g "
        "LEFT JOIN transcript t ON t.gene_id = g.gene_id "
        "WHERE t.transcript_id IS NULL",
        what="genes without transcripts",
    )
