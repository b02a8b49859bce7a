"""The output folder of a run (``OUT``): its layout and every write into it.

Layout::

    labels.zarr/                   NGFF 0.5 plate mirroring the input's wells and fields:
                                   per field the detection channels and the label images
    tables/<name>.parquet          per-field tables (hcsmito.schema), compacted at the end
                                   of a run, and the aggregates
    tables/parts/<name>/<stem>.parquet   each field's rows (``stem``: ``B3_f0``)
    tables/aggregate.json          the aggregation's summary
    ledger/<stem>.json             each field's status, error, timings and input key
    qc/<stem>.png                  max projections with label contours
    figures/                       the report's figures
    platemap.csv                   the plate map the statistics used
    manifest.json                  config, versions, backend, fingerprints, per-field status
    report.html                    the report

Every file is written to a temporary name in its folder and renamed (readers never see
half a file; a killed writer leaves only a ``.*.tmp`` file behind). Only this module
spells a path inside ``OUT``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hcsmito import schema

__all__ = ["FieldOutcome", "RunDir", "atomic_write_bytes", "field_stem", "sort_wells"]


def field_stem(well: str, field: int) -> str:
    """The file stem of one field's outputs: ``B/3``, 0 -> ``B3_f0``."""
    return f"{str(well).replace('/', '')}_f{int(field)}"


#: What :func:`_tmp_path` names: ``.NAME.PID.tmp``.
_TMP_NAME = re.compile(r"\..+\.\d+\.tmp")


def _tmp_path(path: Path) -> Path:
    """A hidden temporary name beside ``path`` (its folder created). It ends in ``.tmp``,
    not in the file's own suffix, so that no ``*.json`` / ``*.png`` listing of the folder
    (the ledger, the report's QC pictures) picks up a file still being written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a temporary name beside ``path``, flush it to disk, rename."""
    path = Path(path)
    tmp = _tmp_path(path)
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class FieldOutcome:
    """One field of a run, for compaction: where its rows are and whether it is ``ok``."""

    plate: str
    well: str
    field: int
    status: str  # "ok" | "failed"

    @property
    def stem(self) -> str:
        return field_stem(self.well, self.field)


class RunDir:
    """The output folder ``OUT`` of a run.

    Parameters
    ----------
    root : path
        The folder (it need not exist yet).
    """

    #: What a run writes at the top of ``OUT`` (removed by ``--overwrite``).
    OUTPUTS = ("labels.zarr", "tables", "ledger", "qc", "figures", "manifest.json",
               "report.html", "platemap.csv")  # fmt: skip

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    # ----------------------------------------------------------------------- paths

    @property
    def labels(self) -> Path:
        return self.root / "labels.zarr"

    @property
    def tables_dir(self) -> Path:
        return self.root / "tables"

    @property
    def ledger_dir(self) -> Path:
        return self.root / "ledger"

    @property
    def qc_dir(self) -> Path:
        return self.root / "qc"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    @property
    def report_path(self) -> Path:
        return self.root / "report.html"

    @property
    def platemap_path(self) -> Path:
        return self.root / "platemap.csv"

    @property
    def summary_path(self) -> Path:
        """The aggregation's summary, ``tables/aggregate.json``."""
        return self.tables_dir / "aggregate.json"

    def table(self, name: str) -> Path:
        return self.tables_dir / f"{name}.parquet"

    def part(self, name: str, stem: str) -> Path:
        return self.tables_dir / "parts" / name / f"{stem}.parquet"

    def ledger(self, stem: str) -> Path:
        return self.ledger_dir / f"{stem}.json"

    def qc_png(self, stem: str) -> Path:
        return self.qc_dir / f"{stem}.png"

    def relative(self, path: Path) -> str:
        """``path`` relative to ``OUT`` (for links in the report)."""
        return Path(path).relative_to(self.root).as_posix()

    # ----------------------------------------------------------------------- atomic writes

    def write_bytes(self, path: Path, data: bytes) -> Path:
        return atomic_write_bytes(path, data)

    def write_text(self, path: Path, text: str) -> Path:
        return self.write_bytes(path, text.encode("utf-8"))

    def write_json(self, path: Path, obj: Any) -> Path:
        return self.write_bytes(path, json.dumps(obj, indent=1, default=str).encode())

    def write_parquet(self, path: Path, df: pd.DataFrame) -> Path:
        tmp = _tmp_path(path)
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
        return path

    def write_png(self, path: Path, rgb: np.ndarray) -> Path:
        """An (M, N, 3) float image in [0, 1] as PNG."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.image import imsave

        tmp = _tmp_path(path)
        imsave(tmp, rgb, format="png")
        os.replace(tmp, path)
        return path

    # ----------------------------------------------------------------------- the folder

    def is_run_folder(self) -> bool:
        return self.manifest_path.exists() or self.ledger_dir.exists()

    def is_empty(self) -> bool:
        return not self.root.exists() or not any(self.root.iterdir())

    def remove_partial(self) -> list[Path]:
        """Delete the ``.*.tmp`` files that killed writers left behind (a worker killed
        while writing its ledger entry, say); returns what was removed. Call it before a
        run starts writing, never while another run writes into the same folder."""
        removed = []
        parts = self.tables_dir / "parts"
        dirs = [self.root, self.tables_dir, self.ledger_dir, self.qc_dir, self.figures]
        dirs += [d for d in parts.iterdir() if d.is_dir()] if parts.is_dir() else []
        for d in dirs:  # not labels.zarr: zarr writes its own chunks
            if not d.is_dir():
                continue
            for p in d.glob(".*.tmp"):
                if p.is_file() and _TMP_NAME.fullmatch(p.name):
                    p.unlink()
                    removed.append(p)
        return removed

    def clear(self) -> None:
        """Delete every output of a previous run (``--overwrite``)."""
        for name in self.OUTPUTS:
            p = self.root / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()

    # ----------------------------------------------------------------------- manifest

    def read_manifest(self) -> dict[str, Any]:
        """``manifest.json`` as a dict (empty when absent)."""
        p = self.manifest_path
        return json.loads(p.read_text()) if p.is_file() else {}

    def write_manifest(self, manifest: dict[str, Any]) -> Path:
        return self.write_json(self.manifest_path, manifest)

    # ----------------------------------------------------------------------- ledger

    def write_ledger(self, stem: str, entry: dict[str, Any]) -> Path:
        """A field's ledger entry: written last, it is the field's "done" mark."""
        return self.write_json(self.ledger(stem), entry)

    def read_ledger(self, stem: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.ledger(stem).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def ledger_entries(self) -> list[dict[str, Any]]:
        """Every readable ledger entry, by file name."""
        out = []
        for p in sorted(self.ledger_dir.glob("[!.]*.json")):  # not a write in progress
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(p.read_text()))
        return out

    # ----------------------------------------------------------------------- tables

    def write_part(self, name: str, stem: str, df: pd.DataFrame) -> Path:
        return self.write_parquet(self.part(name, stem), df)

    def has_parts(self, stem: str) -> bool:
        """Whether a field's part of every per-field table is written."""
        return all(self.part(n, stem).exists() for n in schema.field_tables())

    def write_table(self, name: str, df: pd.DataFrame) -> Path:
        return self.write_parquet(self.table(name), df)

    def has_table(self, name: str) -> bool:
        return self.table(name).is_file()

    def read_table(self, name: str) -> pd.DataFrame:
        return pd.read_parquet(self.table(name))

    def read_tables(self, names: Iterable[str]) -> dict[str, pd.DataFrame]:
        """The tables of ``names`` that exist."""
        return {n: self.read_table(n) for n in names if self.has_table(n)}

    def compact(self, fields: Sequence[FieldOutcome]) -> None:
        """Concatenate the ``ok`` fields' parts into ``tables/<name>.parquet`` (in well,
        field and id order); ``fields`` also gets a row (status ``failed``, counts null) for
        each failed field. A table no field wrote is left unwritten, except ``fields``."""
        for name in schema.field_tables():
            df = self._concat_parts(name, [f for f in fields if f.status == "ok"])
            if df is None and name != "fields":
                continue
            if df is None:
                df = schema.empty_table(name, keys=True)
            if name == "fields":
                df = _with_failed_rows(df, [f for f in fields if f.status == "failed"])
            id_column = schema.TABLES[name].id_column
            df = sort_wells(df, ["well", "field"] + ([id_column] if id_column else []))
            self.write_table(name, df)

    def _concat_parts(self, name: str, fields: Sequence[FieldOutcome]) -> pd.DataFrame | None:
        frames = [pd.read_parquet(p) for f in fields if (p := self.part(name, f.stem)).exists()]
        nonempty = [f for f in frames if len(f)]
        if nonempty:
            return pd.concat(nonempty, ignore_index=True)
        return frames[0].iloc[:0] if frames else None

    # ----------------------------------------------------------------------- status

    def status(self) -> pd.DataFrame:
        """Per-field state from the ledger: well, field, status, seconds, QC flags (codes
        joined by ","; empty for none and for failed fields), error."""
        rows = [
            {
                "well": e.get("well"),
                "field": e.get("field"),
                "status": e.get("status"),
                "seconds": round(float(e.get("wall_s") or 0.0), 2),
                "qc_flags": ",".join(e.get("qc_flags") or []),
                "error": e.get("error") or "",
            }
            for e in self.ledger_entries()
        ]
        if not rows and not self.root.exists():
            raise FileNotFoundError(
                f"{self.root} does not exist: run `hcsmito run --out {self.root}` first"
            )
        cols = ["well", "field", "status", "seconds", "qc_flags", "error"]
        df = pd.DataFrame(rows, columns=cols)
        return sort_wells(df, ["well", "field"]) if len(df) else df


def _with_failed_rows(df: pd.DataFrame, failed: Sequence[FieldOutcome]) -> pd.DataFrame:
    if not failed:
        return df
    bad = pd.DataFrame(
        [{"plate": f.plate, "well": f.well, "field": f.field, "status": "failed"} for f in failed]
    )
    types = df.dtypes if len(df.columns) else schema.empty_table("fields", keys=True).dtypes
    df = pd.concat([df, bad], ignore_index=True) if len(df) else bad
    return df.reindex(columns=types.index).astype(types.to_dict())


def sort_wells(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Rows in plate order (``well`` as rows then columns), then by ``keys[1:]``."""
    if not len(df):
        return df.reset_index(drop=True)
    from hcsmito.io.names import well_sort_key

    order = sorted(
        range(len(df)),
        key=lambda i: (well_sort_key(df["well"].iat[i]), *(df[k].iat[i] for k in keys[1:])),
    )
    return df.iloc[order].reset_index(drop=True)
