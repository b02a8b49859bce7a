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
    .hcsmito                       the mark of an hcsmito output folder (plate, version),
                                   written first: a run killed at once leaves a folder the
                                   re-run recognises
    .hcsmito.lock                  held (``flock``) by the run writing into ``OUT``, with its
                                   PID and host: a second run is refused while it lives

Every file is written to a temporary name in its folder and renamed (readers never see
half a file; a killed writer leaves only a ``.*.tmp`` file behind). Only this module
spells a path inside ``OUT``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import logging
import os
import platform
import re
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hcsmito import schema

__all__ = [
    "FieldOutcome",
    "RunDir",
    "RunDirLocked",
    "atomic_write_bytes",
    "field_stem",
    "sort_wells",
]

log = logging.getLogger(__name__)


class RunDirLocked(RuntimeError):
    """Another live run holds ``OUT``'s lock; the message names its PID and host."""


def field_stem(well: str, field: int) -> str:
    """The file stem of one field's outputs: ``B/3``, 0 -> ``B3_f0``."""
    return f"{str(well).replace('/', '')}_f{int(field)}"


_STEM = re.compile(r"([A-Za-z]+)(\d+)_f(\d+)")


def _stem_field(stem: str) -> tuple[str, int | None]:
    """``B3_f0`` -> (``B/3``, 0); a stem of another shape -> (stem, None)."""
    m = _STEM.fullmatch(stem)
    return (f"{m[1]}/{int(m[2])}", int(m[3])) if m else (stem, None)


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
               "report.html", "platemap.csv", ".hcsmito")  # fmt: skip

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
    def marker_path(self) -> Path:
        return self.root / ".hcsmito"

    @property
    def lock_path(self) -> Path:
        return self.root / ".hcsmito.lock"

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

    def write_parquet(self, path: Path, df: pd.DataFrame, *, table: str | None = None) -> Path:
        """``df`` as Parquet; as ``table`` (a name of :data:`hcsmito.schema.TABLES`): an
        empty one keeps its declared column types and each column's unit is its Arrow
        field metadata (``{b"unit": "µm".encode()}``)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if table is not None:
            df = schema.conform(table, df)
        at = pa.Table.from_pandas(df, preserve_index=False)
        if table is not None:
            units = schema.column_units(table, at.column_names)
            fields = [
                f.with_metadata({b"unit": units[f.name].encode()}) if f.name in units else f
                for f in at.schema
            ]
            at = at.cast(pa.schema(fields, metadata=at.schema.metadata))
        tmp = _tmp_path(path)
        pq.write_table(at, tmp)
        os.replace(tmp, path)
        return path

    def write_png(self, path: Path, rgb: np.ndarray, *, title: str | None = None) -> Path:
        """An (M, N, 3) float image in [0, 1] as PNG; ``title`` goes into its ``Title``
        text chunk."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.image import imsave

        tmp = _tmp_path(path)
        imsave(tmp, rgb, format="png", metadata={"Title": title} if title else None)
        os.replace(tmp, path)
        return path

    # ----------------------------------------------------------------------- the folder

    def is_run_folder(self) -> bool:
        """Whether ``OUT`` is hcsmito's: marked by a run's first write (or, from runs before
        the mark, a manifest or a ledger)."""
        marks = (self.marker_path, self.lock_path, self.manifest_path, self.ledger_dir)
        return any(p.exists() for p in marks)

    def mark(self, plate_path: str | Path) -> Path:
        """Mark ``OUT`` as hcsmito's output of ``plate_path`` (a run's first write)."""
        from hcsmito import __version__

        info = {"hcsmito": __version__, "plate_path": str(plate_path)}
        return self.write_json(self.marker_path, info)

    def plate_path(self) -> str | None:
        """The plate ``OUT`` holds results of, from the mark or the manifest (None: unknown)."""
        for p in (self.marker_path, self.manifest_path):
            with contextlib.suppress(OSError, ValueError, AttributeError):
                found = json.loads(p.read_text()).get("plate_path")
                if found:
                    return str(found)
        return None

    def check_target(self, *, overwrite: bool = False) -> None:
        """Refuse, before anything is written, an ``OUT`` that is a file, a folder that is
        not hcsmito's (unless ``overwrite``), or a place this process cannot write; create
        the folder. Each error is one line that names ``OUT``."""
        root = self.root
        if root.exists() and not root.is_dir():
            raise FileExistsError(f"--out {root} is a file, not a folder: choose a folder")
        if not self.is_empty() and not overwrite and not self.is_run_folder():
            raise FileExistsError(
                f"{root} exists and is not an hcsmito output folder: choose another --out "
                "or pass --overwrite"
            )
        try:
            root.mkdir(parents=True, exist_ok=True)
            probe = root / f".hcsmito.probe.{os.getpid()}.tmp"
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
            probe.unlink()
        except NotADirectoryError:
            above = next(p for p in root.parents if p.exists() and not p.is_dir())
            msg = f"--out {root}: {above} is a file, not a folder: choose another --out"
            raise FileExistsError(msg) from None
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            msg = f"--out {root} is not writable ({why}): choose another --out"
            raise PermissionError(msg) from None

    @contextlib.contextmanager
    def lock(self) -> Iterator[dict[str, Any]]:
        """Hold ``OUT``'s lock for the block: an ``flock`` on ``.hcsmito.lock``, which the
        kernel drops when this process dies, and in the file this process's PID, host and
        start. Yields what the file held before (empty when the folder was free).

        Raises
        ------
        RunDirLocked
            While another live process holds it (named by its PID and host).

        A lock file left by a run that died (its PID no longer holds the ``flock``) is
        stale: it is taken over, with a warning that names the dead run.
        """
        path = self.lock_path
        self.root.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                _flock(fd, path)
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:  # the holder released (removed) it meanwhile
                same = False
            except BaseException:
                os.close(fd)
                raise
            if same:
                break
            os.close(fd)  # locked a file its holder had just removed: lock the new one
        try:
            previous = _read_lock(fd)
            if previous.get("pid") not in (None, os.getpid()):
                log.warning(
                    "%s: took over the stale lock of hcsmito run %s (it is no longer running)",
                    self.root,
                    _holder(previous),
                )
            mine = {
                "pid": os.getpid(),
                "host": platform.node(),
                "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            }
            data = json.dumps(mine).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            os.fsync(fd)
            yield previous
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            os.close(fd)

    def is_empty(self) -> bool:
        """Whether ``OUT`` holds nothing (but, maybe, what a run killed at once left: a
        lock or write probe, named ``.hcsmito*``)."""
        if not self.root.is_dir():
            return not self.root.exists()
        return all(p.name.startswith(".hcsmito") for p in self.root.iterdir())

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
        """A field's ledger entry; None when it is absent or cannot be trusted (see
        :meth:`ledger_problem`): the field is then redone."""
        return _load_entry(self.ledger(stem))[0]

    def ledger_problem(self, stem: str) -> str | None:
        """Why a field's ledger entry cannot be used (None when it can, or is absent)."""
        return _load_entry(self.ledger(stem))[1]

    def ledger_entries(self) -> list[dict[str, Any]]:
        """Every readable ledger entry, by file name."""
        found = (_load_entry(p)[0] for p in self._ledger_files())
        return [e for e in found if e is not None]

    def _ledger_files(self) -> list[Path]:
        return sorted(self.ledger_dir.glob("[!.]*.json"))  # not a write in progress

    # ----------------------------------------------------------------------- tables

    def write_part(self, name: str, stem: str, df: pd.DataFrame) -> Path:
        return self.write_parquet(self.part(name, stem), df, table=name)

    def has_parts(self, stem: str) -> bool:
        """Whether a field's part of every per-field table is written and readable."""
        return self.parts_problem(stem) is None

    def parts_problem(self, stem: str) -> str | None:
        """Why a field's parts cannot be used: the first part that is missing, empty
        (0 bytes) or not a Parquet file (None when every part reads)."""
        import pyarrow.parquet as pq

        for name in schema.field_tables():
            p = self.part(name, stem)
            rel = self.relative(p) if p.is_relative_to(self.root) else str(p)
            try:
                if p.stat().st_size == 0:
                    return f"{rel} is empty (0 bytes)"
                pq.read_metadata(p)
            except FileNotFoundError:
                return f"{rel} is missing"
            except Exception as exc:  # torn, truncated, not Parquet, unreadable
                return f"{rel} is unreadable ({type(exc).__name__}: {exc})"
        return None

    def write_table(self, name: str, df: pd.DataFrame) -> Path:
        return self.write_parquet(self.table(name), df, table=name)

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
        joined by ","; empty for none and for failed fields), error.

        A field whose ledger entry is torn or not an entry, or whose entry says ``ok`` but
        whose part tables are missing, empty or unreadable, has status ``redo`` and the
        reason as its error: the next run processes it again."""
        rows = []
        for p in self._ledger_files():
            e, problem = _load_entry(p)
            well, field = _stem_field(p.stem)
            if e is not None and e.get("status") == "ok":
                problem = self.parts_problem(p.stem)
            if e is None or problem:
                e = {"status": "redo", "error": f"{problem}: the field will be redone"}
            rows.append(
                {
                    "well": e.get("well", well),
                    "field": e.get("field", field),
                    "status": e.get("status"),
                    "seconds": round(float(e.get("wall_s") or 0.0), 2),
                    "qc_flags": ",".join(e.get("qc_flags") or []),
                    "error": e.get("error") or "",
                }
            )
        if not rows and not self.root.exists():
            raise FileNotFoundError(
                f"{self.root} does not exist: run `hcsmito run --out {self.root}` first"
            )
        cols = ["well", "field", "status", "seconds", "qc_flags", "error"]
        df = pd.DataFrame(rows, columns=cols)
        return sort_wells(df, ["well", "field"]) if len(df) else df


def _load_entry(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """A ledger entry and None, or None and why it cannot be used (None, None: absent)."""
    rel = f"ledger/{path.name}"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"{rel} is unreadable ({exc.strerror or type(exc).__name__})"
    if not raw.strip():
        return None, f"{rel} is empty"
    try:
        entry = json.loads(raw)
    except ValueError as exc:
        return None, f"{rel} is not JSON ({exc})"
    if not isinstance(entry, dict) or entry.get("status") not in ("ok", "failed"):
        return None, f"{rel} is not a ledger entry (no status ok / failed)"
    return entry, None


def _flock(fd: int, path: Path) -> None:
    """Take the ``flock`` of an open lock file, or raise :class:`RunDirLocked` naming the
    live holder. Where the file system has no ``flock`` (some network mounts), a holder
    whose PID runs on this host, or that runs on another host, counts as live."""
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        holder = _read_lock(fd)
    except OSError as exc:
        if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        holder = _read_lock(fd)
        if not holder or (holder.get("host") == platform.node() and not _alive(holder["pid"])):
            return
    raise RunDirLocked(
        f"{path.parent} is in use by another hcsmito run ({_holder(holder)}): wait for it to "
        f"finish or choose another --out (if that run is gone, delete {path.name})"
    )


def _read_lock(fd: int) -> dict[str, Any]:
    """What a lock file says (empty when it is new, torn or not ours)."""
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}
    return info if isinstance(info, dict) and isinstance(info.get("pid"), int) else {}


def _holder(info: dict[str, Any]) -> str:
    if not info:
        return "its PID is not written yet"
    return f"PID {info['pid']} on {info.get('host') or '?'}, started {info.get('started') or '?'}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
