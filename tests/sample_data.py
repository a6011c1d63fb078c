"""Generated datasets shaped like an Ensembl core database, for tests and benchmarks.

``build_core_like`` creates a database with the tables, foreign keys, column
types and a ``meta`` table like the real datasets prodinf hands over, filled
deterministically from a seed. The same call gives the same rows on SQLite,
PostgreSQL and MariaDB, so a copy or a checksum can be checked across engines.
The schema is written with SQLAlchemy Core only (no engine-specific SQL).
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Table,
    Text,
)
from sqlalchemy.engine import Connection

from prodinf.databases.uri import DatabaseURI, database_errors
from prodinf.exceptions import PermanentError

__all__ = ["CORE_TABLES", "build_core_like", "core_metadata", "dataset_uri", "rows_per_gene"]

#: The tables ``build_core_like`` creates, parents before children.
CORE_TABLES = (
    "coord_system",
    "seq_region",
    "xref",
    "gene",
    "transcript",
    "exon",
    "exon_transcript",
    "translation",
    "object_xref",
    "meta",
)

_BATCH = 5000
_BIOTYPES = ("protein_coding", "protein_coding", "protein_coding", "lncRNA", "pseudogene")
# Unicode on purpose: datasets hold Greek letters, accents and other scripts.
_WORDS = (
    "kinase", "receptor", "α-globin", "β-catenin", "naïve", "zinc finger",  # noqa: RUF001
    "транскрипт", "转录因子", "ribosomal", "membrane", "Ångström", "mitochondrial",
    "domain", "protein",
)  # fmt: skip
_EPOCH = dt.datetime(2015, 1, 1, 0, 0, 0)


def core_metadata() -> MetaData:
    """The core-like schema: real foreign keys (InnoDB on MariaDB), mixed column types."""
    md = MetaData()
    kw: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}
    Table(
        "coord_system", md,
        Column("coord_system_id", Integer, primary_key=True, autoincrement=False),
        Column("species_id", Integer, nullable=False),
        Column("name", String(40), nullable=False),
        Column("version", String(255)),
        Column("rank", Integer, nullable=False),
        Column("attrib", String(80)),
        **kw,
    )  # fmt: skip
    Table(
        "seq_region", md,
        Column("seq_region_id", Integer, primary_key=True, autoincrement=False),
        Column("name", String(255), nullable=False),
        Column("coord_system_id", Integer, ForeignKey("coord_system.coord_system_id"),
               nullable=False),
        Column("length", Integer, nullable=False),
        **kw,
    )  # fmt: skip
    Table(
        "xref", md,
        Column("xref_id", Integer, primary_key=True, autoincrement=False),
        Column("external_db_id", Integer, nullable=False),
        Column("dbprimary_acc", String(512), nullable=False),
        Column("display_label", String(512), nullable=False),
        Column("version", String(10)),
        Column("description", Text),
        Column("info_type", String(20), nullable=False),
        **kw,
    )  # fmt: skip
    Table(
        "gene", md,
        Column("gene_id", Integer, primary_key=True, autoincrement=False),
        Column("biotype", String(40), nullable=False),
        Column("seq_region_id", Integer, ForeignKey("seq_region.seq_region_id"), nullable=False),
        Column("seq_region_start", Integer, nullable=False),
        Column("seq_region_end", Integer, nullable=False),
        Column("seq_region_strand", SmallInteger, nullable=False),
        Column("display_xref_id", Integer, ForeignKey("xref.xref_id")),
        Column("source", String(40), nullable=False),
        Column("description", Text),
        Column("is_current", Boolean, nullable=False),
        Column("canonical_transcript_id", Integer, nullable=False),
        Column("stable_id", String(128), nullable=False),
        Column("version", SmallInteger),
        Column("gc_percent", Numeric(5, 2)),
        Column("created_date", DateTime, nullable=False),
        Column("modified_date", DateTime),
        Index("gene_seq_region_idx", "seq_region_id", "seq_region_start"),
        **kw,
    )  # fmt: skip
    Table(
        "transcript", md,
        Column("transcript_id", Integer, primary_key=True, autoincrement=False),
        Column("gene_id", Integer, ForeignKey("gene.gene_id")),
        Column("seq_region_id", Integer, ForeignKey("seq_region.seq_region_id"), nullable=False),
        Column("seq_region_start", Integer, nullable=False),
        Column("seq_region_end", Integer, nullable=False),
        Column("seq_region_strand", SmallInteger, nullable=False),
        Column("biotype", String(40), nullable=False),
        Column("stable_id", String(128), nullable=False),
        Column("tsl_score", Double),
        Column("created_date", DateTime, nullable=False),
        **kw,
    )  # fmt: skip
    Table(
        "exon", md,
        Column("exon_id", Integer, primary_key=True, autoincrement=False),
        Column("seq_region_id", Integer, ForeignKey("seq_region.seq_region_id"), nullable=False),
        Column("seq_region_start", Integer, nullable=False),
        Column("seq_region_end", Integer, nullable=False),
        Column("seq_region_strand", SmallInteger, nullable=False),
        Column("phase", SmallInteger, nullable=False),
        Column("end_phase", SmallInteger, nullable=False),
        Column("is_constitutive", Boolean, nullable=False),
        Column("stable_id", String(128), nullable=False),
        Column("release_date", Date),
        **kw,
    )  # fmt: skip
    Table(
        "exon_transcript", md,
        Column("exon_id", Integer, ForeignKey("exon.exon_id"), primary_key=True,
               autoincrement=False),
        Column("transcript_id", Integer, ForeignKey("transcript.transcript_id"),
               primary_key=True, autoincrement=False),
        Column("rank", Integer, primary_key=True, autoincrement=False),
        **kw,
    )  # fmt: skip
    Table(
        "translation", md,
        Column("translation_id", Integer, primary_key=True, autoincrement=False),
        Column("transcript_id", Integer, ForeignKey("transcript.transcript_id"), nullable=False),
        Column("seq_start", Integer, nullable=False),
        Column("start_exon_id", Integer, ForeignKey("exon.exon_id"), nullable=False),
        Column("seq_end", Integer, nullable=False),
        Column("end_exon_id", Integer, ForeignKey("exon.exon_id"), nullable=False),
        Column("stable_id", String(128), nullable=False),
        **kw,
    )  # fmt: skip
    Table(
        "object_xref", md,
        Column("object_xref_id", Integer, primary_key=True, autoincrement=False),
        Column("ensembl_id", Integer, nullable=False),
        Column("ensembl_object_type", String(20), nullable=False),
        Column("xref_id", Integer, ForeignKey("xref.xref_id"), nullable=False),
        Column("identity", Double),
        Column("linkage_annotation", String(255)),
        **kw,
    )  # fmt: skip
    Table(
        "meta", md,
        Column("meta_id", Integer, primary_key=True, autoincrement=True),
        Column("species_id", Integer),
        Column("meta_key", String(40), nullable=False),
        Column("meta_value", String(255), nullable=False),
        Index("meta_key_idx", "meta_key"),
        **kw,
    )  # fmt: skip
    return md


def rows_per_gene() -> float:
    """Rows ``build_core_like`` writes per gene, on average (for sizing a dataset)."""
    # gene 1, transcript 2, exon 5, exon_transcript 8, translation ~1.6, xref and object_xref ~2.6.
    return 22.8


def dataset_uri(server_url: str, name: str) -> str:
    """The URI of database ``name`` on the server of ``server_url`` (SQLite: a file beside it)."""
    return DatabaseURI.parse(server_url, field="server_url").with_database(name).secret()


def build_core_like(
    uri: str | DatabaseURI,
    *,
    genes: int = 5000,
    species: str = "homo_sapiens",
    release: int = 115,
    assembly: str = "GRCh38",
    seed: int = 0,
) -> dict[str, int]:
    """Create and fill a core-like database; returns rows per table.

    Creates the database if missing and refuses one that already has tables.
    ``genes=5000`` gives about 114,000 rows; the size scales linearly with it.
    """
    target = DatabaseURI.of(uri)
    target.create()
    if target.table_names():
        raise PermanentError(f"{target.masked()} already has tables; build into an empty database")
    md = core_metadata()
    engine = target.create_engine()
    counts: dict[str, int] = {}
    try:
        with database_errors(target, "building"), engine.begin() as conn:
            md.create_all(conn)
        gen = _Generator(genes, species, release, assembly, seed)
        for name in CORE_TABLES:
            table = md.tables[name]
            with database_errors(target, "building"), engine.begin() as conn:
                counts[name] = _insert(conn, table, getattr(gen, name))
    finally:
        engine.dispose()
    return counts


def _insert(conn: Connection, table: Table, rows: Callable[[], Iterator[dict[str, Any]]]) -> int:
    batch: list[dict[str, Any]] = []
    total = 0
    for row in rows():
        batch.append(row)
        if len(batch) >= _BATCH:
            conn.execute(table.insert(), batch)
            total += len(batch)
            batch = []
    if batch:
        conn.execute(table.insert(), batch)
        total += len(batch)
    return total


class _Generator:
    """Rows of each table, deterministic from the seed; ids are dense from 1."""

    def __init__(self, genes: int, species: str, release: int, assembly: str, seed: int) -> None:
        self.genes, self.species, self.release, self.assembly = genes, species, release, assembly
        self.seed = seed
        self.regions = max(10, genes // 50)
        self.prefix = "".join(part[:3] for part in species.split("_")[:2]).upper() or "ENS"
        # Which transcripts are coding decides translations and xrefs; fixed up front.
        rng = random.Random(seed)
        self.coding = [rng.random() < 0.8 for _ in range(genes * 2)]
        self.translations = [i + 1 for i, coding in enumerate(self.coding) if coding]

    def _rng(self, table: str) -> random.Random:
        return random.Random(f"{self.seed}:{table}")

    def _text(self, rng: random.Random, words: int) -> str:
        return " ".join(rng.choice(_WORDS) for _ in range(words))

    def coord_system(self) -> Iterator[dict[str, Any]]:
        for i, (name, rank) in enumerate((("chromosome", 1), ("scaffold", 2), ("contig", 3)), 1):
            yield {
                "coord_system_id": i, "species_id": 1, "name": name,
                "version": self.assembly if rank < 3 else None, "rank": rank,
                "attrib": "default_version" if rank == 1 else None,
            }  # fmt: skip

    def seq_region(self) -> Iterator[dict[str, Any]]:
        rng = self._rng("seq_region")
        for i in range(1, self.regions + 1):
            yield {
                "seq_region_id": i, "name": str(i) if i <= 25 else f"KI{270000 + i}.1",
                "coord_system_id": 1 if i <= 25 else 2, "length": rng.randint(10**6, 2 * 10**8),
            }  # fmt: skip

    def xref(self) -> Iterator[dict[str, Any]]:
        rng = self._rng("xref")
        total = self.genes + len(self.translations)
        for i in range(1, total + 1):
            yield {
                "xref_id": i, "external_db_id": 1000 + i % 7,
                "dbprimary_acc": f"ACC{i:08d}", "display_label": f"LBL{i}-{rng.randint(1, 99)}",
                "version": str(rng.randint(0, 9)) if rng.random() < 0.7 else None,
                "description": self._text(rng, 3) if rng.random() < 0.6 else None,
                "info_type": rng.choice(("DIRECT", "DEPENDENT", "SEQUENCE_MATCH")),
            }  # fmt: skip

    def gene(self) -> Iterator[dict[str, Any]]:
        rng = self._rng("gene")
        for i in range(1, self.genes + 1):
            start = rng.randint(1, 10**8)
            created = _EPOCH + dt.timedelta(seconds=rng.randint(0, 10**8))
            yield {
                "gene_id": i, "biotype": rng.choice(_BIOTYPES),
                "seq_region_id": rng.randint(1, self.regions),
                "seq_region_start": start, "seq_region_end": start + rng.randint(500, 200000),
                "seq_region_strand": rng.choice((1, -1)),
                "display_xref_id": i if rng.random() < 0.9 else None,
                "source": rng.choice(("ensembl", "havana", "ensembl_havana")),
                "description": self._text(rng, 4) if rng.random() < 0.8 else None,
                "is_current": rng.random() < 0.98, "canonical_transcript_id": 2 * i - 1,
                "stable_id": f"{self.prefix}G{i:011d}",
                "version": rng.randint(1, 20) if rng.random() < 0.9 else None,
                "gc_percent": Decimal(rng.randint(2000, 7000)) / 100,
                "created_date": created,
                "modified_date": created + dt.timedelta(days=rng.randint(0, 900))
                if rng.random() < 0.5 else None,
            }  # fmt: skip

    def transcript(self) -> Iterator[dict[str, Any]]:
        rng = self._rng("transcript")
        for i in range(1, 2 * self.genes + 1):
            start = rng.randint(1, 10**8)
            yield {
                "transcript_id": i, "gene_id": (i + 1) // 2,
                "seq_region_id": rng.randint(1, self.regions),
                "seq_region_start": start, "seq_region_end": start + rng.randint(300, 100000),
                "seq_region_strand": rng.choice((1, -1)),
                "biotype": "protein_coding" if self.coding[i - 1] else "retained_intron",
                "stable_id": f"{self.prefix}T{i:011d}",
                "tsl_score": round(rng.random() * 5, 4) if rng.random() < 0.7 else None,
                "created_date": _EPOCH + dt.timedelta(seconds=rng.randint(0, 10**8)),
            }  # fmt: skip

    def exon(self) -> Iterator[dict[str, Any]]:
        rng = self._rng("exon")
        for i in range(1, 5 * self.genes + 1):
            start = rng.randint(1, 10**8)
            yield {
                "exon_id": i, "seq_region_id": rng.randint(1, self.regions),
                "seq_region_start": start, "seq_region_end": start + rng.randint(50, 3000),
                "seq_region_strand": rng.choice((1, -1)), "phase": rng.choice((-1, 0, 1, 2)),
                "end_phase": rng.choice((-1, 0, 1, 2)), "is_constitutive": rng.random() < 0.3,
                "stable_id": f"{self.prefix}E{i:011d}",
                "release_date": dt.date(2015, 1, 1) + dt.timedelta(days=rng.randint(0, 3650))
                if rng.random() < 0.9 else None,
            }  # fmt: skip

    def exon_transcript(self) -> Iterator[dict[str, Any]]:
        # Transcript t of gene g uses 4 of the gene's 5 exons: it skips exon (t % 5).
        for t in range(1, 2 * self.genes + 1):
            gene = (t + 1) // 2
            skip = t % 5
            exons = [5 * (gene - 1) + k + 1 for k in range(5) if k != skip]
            for rank, exon in enumerate(exons, 1):
                yield {"exon_id": exon, "transcript_id": t, "rank": rank}

    def translation(self) -> Iterator[dict[str, Any]]:
        rng = self._rng("translation")
        for n, t in enumerate(self.translations, 1):
            gene = (t + 1) // 2
            yield {
                "translation_id": n, "transcript_id": t, "seq_start": rng.randint(1, 200),
                "start_exon_id": 5 * (gene - 1) + 1 + (1 if t % 5 == 0 else 0),
                "seq_end": rng.randint(1, 500),
                "end_exon_id": 5 * (gene - 1) + 5 - (1 if t % 5 == 4 else 0),
                "stable_id": f"{self.prefix}P{n:011d}",
            }  # fmt: skip

    def object_xref(self) -> Iterator[dict[str, Any]]:
        rng = self._rng("object_xref")
        for i in range(1, self.genes + len(self.translations) + 1):
            is_gene = i <= self.genes
            yield {
                "object_xref_id": i, "ensembl_id": i if is_gene else i - self.genes,
                "ensembl_object_type": "Gene" if is_gene else "Translation", "xref_id": i,
                "identity": round(rng.uniform(40, 100), 3) if not is_gene else None,
                "linkage_annotation": "IEA" if rng.random() < 0.2 else None,
            }  # fmt: skip

    def meta(self) -> Iterator[dict[str, Any]]:
        pairs: list[tuple[int | None, str, str]] = [
            (None, "schema_version", str(self.release)),
            (None, "schema_type", "core"),
            (1, "species.production_name", self.species),
            (1, "species.scientific_name", self.species.replace("_", " ").capitalize()),
            (1, "assembly.default", self.assembly),
            (1, "assembly.name", self.assembly),
            (1, "genebuild.version", f"{self.release - 100}.{self.seed % 10}"),
            (1, "species.taxonomy_id", "9606"),
        ]
        for i, (species_id, key, value) in enumerate(pairs, 1):
            yield {"meta_id": i, "species_id": species_id, "meta_key": key, "meta_value": value}
