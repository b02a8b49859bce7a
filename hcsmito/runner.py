"""The batch runner: one Dask task per field, resumable, with NGFF labels and Parquet out.

The output folder and every write into it belong to :class:`hcsmito.io.rundir.RunDir`
(its docstring shows the layout); the channel roles and the tables written come from
:mod:`hcsmito.schema`.

A field's ledger entry is written last, atomically: it is the field's "done" mark. A re-run
skips fields whose entry is ``ok`` with the same key (input fingerprint + config hash +
hcsmito version); failed, missing and changed fields are processed again. Every writer of a
field writes only that field's files; group metadata (the label plate) is written by the
driver alone.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import logging
import os
import platform
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hcsmito import __version__, schema
from hcsmito.cluster import check_scheduler, run_fields, with_peak_bytes
from hcsmito.config import Config, FieldConfig, config_hash, load_config
from hcsmito.io.rundir import FieldOutcome, RunDir, field_stem
from hcsmito.plate_refs import (
    check_roles,
    plate_glass,
    plate_thresholds,
    read_channels,
    reader_flags,
    select_fields,
)
from hcsmito.platemap import validate_plate_map
from hcsmito.qc import check_flags, join_flags

__all__ = [
    "FieldTask",
    "RunSummary",
    "field_status",
    "run_field",
    "run_plate",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FieldTask:
    """Everything a worker needs to process one field (picklable)."""

    plate_path: str
    plate_name: str
    well: str  # "B/3"
    well_path: str  # the plate's own path: "B/03" or "B/3"
    field: int
    out: str
    key: str
    config: dict
    backend: str | None
    condition: str | None = None  # from the plate map, for the QC picture's caption
    peak_bytes: int | None = None  # expected peak host memory (set when it is submitted)
    memory_budget: int | None = None  # a worker's memory: a field over it is refused

    @property
    def stem(self) -> str:
        return field_stem(self.well, self.field)

    @property
    def name(self) -> str:
        """Dask key: ``stage-well-field`` so the dashboard reads well."""
        return f"field-{self.well.replace('/', '')}-{self.field}"


@dataclass
class RunSummary:
    """What :func:`run_plate` did."""

    out: Path
    processed: list[str]
    skipped: list[str]
    failed: dict[str, str]
    wall_s: float
    flagged: dict[str, list[str]] = field(default_factory=dict)
    """QC codes of every flagged field of the run (processed or up to date), by
    ``well/field``."""
    report_error: str | None = None
    """Why the report could not be built (None when it was, or was not asked for)."""

    @property
    def ok(self) -> bool:
        return not self.failed and self.report_error is None

    def flag_summary(self) -> str:
        """``"3 fields flagged: saturated 2, vignetting 1"``, or ``""``."""
        from hcsmito.qc import format_flag_counts

        return format_flag_counts([tuple(v) for v in self.flagged.values()])


# --------------------------------------------------------------------------- helpers


def field_fingerprint(plate_path: Path, image_path: str) -> str:
    """Hash of a field's stored bytes' identity: metadata text + (name, size, mtime) of files."""
    h = hashlib.sha256()
    root = plate_path / image_path
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "labels")
        for fn in sorted(filenames):
            p = Path(dirpath) / fn
            st = p.stat()
            rel = p.relative_to(root).as_posix()
            h.update(f"{rel}:{st.st_size}:{st.st_mtime_ns}\n".encode())
            if fn in ("zarr.json", ".zattrs", ".zarray", ".zgroup"):
                h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"hcsmito": __version__, "python": platform.python_version()}
    for pkg in ("numpy", "scipy", "scikit-image", "dask", "distributed", "zarr", "pandas"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    for pkg in ("cupy-cuda12x", "cupy-cuda13x", "cucim-cu12", "cucim-cu13"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    return out


@lru_cache(maxsize=8)
def _open_plate_cached(path: str):
    from hcsmito.io.plate import open_plate

    return open_plate(path)


# --------------------------------------------------------------------------- one field


def run_field(task: FieldTask) -> dict:
    """Process one field and write its outputs; never raises for a bad field.

    Returns the field's ledger entry (also written to ``OUT/ledger``): ``status`` is
    ``ok`` or ``failed`` (with ``error``), ``timings`` has seconds per stage.
    """
    from hcsmito.pipeline import process_field

    rd = RunDir(task.out)
    t0 = time.perf_counter()
    entry: dict[str, Any] = {
        "well": task.well,
        "well_path": task.well_path,
        "field": task.field,
        "key": task.key,
        "host": platform.node(),
        "pid": os.getpid(),
    }
    where = f"plate {task.plate_name}, well {task.well}, field {task.field}"
    try:
        config = Config.model_validate(task.config)
        plate = _open_plate_cached(task.plate_path)
        if task.peak_bytes is not None and task.memory_budget is not None:
            # metadata only: a field that cannot fit alone fails here, not by the OOM killer
            img = plate.read_field(task.well_path, task.field)
            img.check_memory(task.memory_budget, peak_bytes=task.peak_bytes)
        t_load = time.perf_counter()
        img, roles, channels = read_channels(plate, task.well_path, task.field, config)
        t_read = time.perf_counter() - t_load
        res = process_field(
            channels,
            voxel_size=img.voxel_size,
            config=FieldConfig.of(config),  # the sections a field reads
            backend=task.backend,
            where=where,
        )
        read_flags, read_qc = reader_flags(img)  # what config.input let through
        flags = check_flags([*read_flags, *res.qc_flags], source="the reader")
        t_w = time.perf_counter()
        labels = {r: img.channel_labels[i] for r, i in roles.items() if i is not None}
        _write_field_outputs(rd, task, img.voxel_size, labels, channels, res, flags)
        timings = {"read": t_read, **res.timings, "write": time.perf_counter() - t_w}
        entry.update(
            status="ok",
            error=None,
            notes=res.notes,
            timings=timings,
            qc_flags=list(flags),
            # JSON has no inf / NaN: a measure that could not be made is null
            qc={
                k: (float(v) if np.isfinite(v) else None) for k, v in {**read_qc, **res.qc}.items()
            },
        )
    except Exception as exc:  # one bad field never loses the others
        log.error("%s failed: %s", where, exc)
        entry.update(
            status="failed",
            error=f"{type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(limit=6),
            timings={},
            qc_flags=None,
        )
    entry["wall_s"] = time.perf_counter() - t0
    rd.write_ledger(task.stem, entry)
    return entry


def _write_field_outputs(
    rd: RunDir, task: FieldTask, voxel_size, labels, channels, res, flags
) -> None:
    from hcsmito.io.writer import write_image, write_labels
    from hcsmito.report.overlay import qc_caption, qc_picture

    tables = dict(res.tables)
    for name, df in tables.items():
        df = df.copy()
        if name == "fields":  # the stages' codes and the reader's, in the schema's dtype
            df["qc_flags"] = pd.Series(join_flags(flags), index=df.index).astype(
                df["qc_flags"].dtype
            )
        df.insert(0, "field", np.int32(task.field))
        df.insert(0, "well", task.well)
        df.insert(0, "plate", task.plate_name)
        rd.write_part(name, task.stem, df)

    ndim = next(iter(channels.values())).ndim
    axes = "zyx"[3 - ndim :]
    vox = {a: voxel_size[a] for a in axes}
    roles = [r.name for r in schema.ROLES if r.to_labels and r.name in channels]
    # one uint16 stack, filled a channel at a time (no float copy of a stored channel)
    stack = np.empty((len(roles), *channels[roles[0]].shape), np.uint16) if roles else None
    for i, r in enumerate(roles):
        a = res.processed.get(r, channels[r])
        if a.dtype.kind == "u" and a.dtype.itemsize <= 2:
            stack[i] = a  # nothing to round or clip
        else:
            stack[i] = np.clip(np.rint(a), 0, 65535)
    lab_plate = rd.labels
    write_image(
        lab_plate,
        task.well_path,
        task.field,
        stack,
        axes="c" + axes,
        voxel_size=vox,
        channel_labels=[labels[r] for r in roles],
    )
    for name, lab in res.labels.items():
        write_labels(lab_plate, task.well_path, task.field, name, lab, axes=axes, voxel_size=vox)
    caption = qc_caption(task.plate_name, task.well, task.field, task.condition)
    picture = qc_picture(channels, res.labels, voxel_size=voxel_size, caption=caption)
    rd.write_png(rd.qc_png(task.stem), picture, title=caption)


# --------------------------------------------------------------------------- driver


def _done(rd: RunDir, task: FieldTask) -> bool:
    """Whether a field is done with this input and config; a field whose ledger entry or
    part tables are damaged (empty, torn, unreadable) is not, and a warning says why."""
    entry = rd.read_ledger(task.stem)
    problem = rd.ledger_problem(task.stem)
    if entry and entry.get("status") == "ok" and entry.get("key") == task.key:
        problem = rd.parts_problem(task.stem)
        if problem is None:
            return True
    if problem:
        log.warning("well %s, field %d is redone: %s", task.well, task.field, problem)
    return False


def _done_earlier(rd: RunDir, task: FieldTask) -> bool:
    """Whether a field outside this run's ``--wells`` was run before into ``OUT`` with this
    input and config (ok with its parts intact, or failed): its results join this run's.
    One done with another input or config, or damaged, is left out, with a warning."""
    entry = rd.read_ledger(task.stem)
    if entry is None:
        return False
    if entry.get("key") == task.key:
        if entry.get("status") == "failed" or rd.parts_problem(task.stem) is None:
            return True
        why = rd.parts_problem(task.stem)
    else:
        why = "it was run with another input, config or hcsmito version"
    log.warning(
        "well %s, field %d is left out of the tables: %s; run it again (--wells %s)",
        task.well,
        task.field,
        why,
        task.well,
    )
    return False


def _check_apart(out: Path, plate_path: str | Path) -> None:
    """Refuse an OUT that is, holds or lies inside the input plate (links resolved): the
    plate is never written to, with or without ``--overwrite``."""
    o, p = out.resolve(), Path(plate_path).resolve()
    if o == p or p in o.parents or o in p.parents:
        where = "is" if o == p else ("lies inside" if p in o.parents else "holds")
        raise ValueError(
            f"--out {out} {where} the input plate {plate_path}: the plate is never "
            "written to; choose an output folder outside it"
        )


def _prepare_out(rd: RunDir, plate, overwrite: bool) -> None:
    """Under ``OUT``'s lock: refuse results of another plate, clear (``--overwrite``), mark
    ``OUT`` as this plate's (the first write), remove what killed writers left, create
    the label plate."""
    from hcsmito.io.writer import create_plate

    plate_path = str(Path(plate.path).resolve())
    if overwrite:
        rd.clear()
    elif rd.plate_path() not in (None, plate_path):
        raise FileExistsError(
            f"{rd.root} holds results of another plate ({rd.plate_path()}): "
            "choose another --out or pass --overwrite"
        )
    rd.mark(plate_path)
    for p in rd.remove_partial():
        log.info("removed %s, left by a writer killed in an earlier run", rd.relative(p))
    if not rd.labels.exists():
        # the input's own well and field paths (B/2/0 stays B/2/0, a field "f3" stays f3):
        # a field opened in the plate opens at the same path in the results
        images: dict[str, list[str]] = {}
        for r in plate.fields:
            images.setdefault(r.well_path, []).append(r.path.rsplit("/", 1)[-1])
        create_plate(
            rd.labels, wells=list(images), fields_per_well=images, name=plate.name, pad=None
        )


def run_plate(
    plate_path: str | Path,
    out: str | Path,
    *,
    config: Config | None = None,
    plate_map: str | Path | None = None,
    wells: Sequence[str] | None = None,
    backend: str | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    report: bool = True,
) -> RunSummary:
    """Process a plate (or some of its wells) into ``out``; resumable.

    Parameters
    ----------
    plate_path : path
        OME-NGFF HCS plate (0.4 or 0.5), opened read-only.
    out : path
        Output folder (see the module docstring for its layout).
    config : Config, optional
        Default: ``conf/default.yaml``.
    plate_map : path, optional
        CSV ``well,condition[,replicate,day,...]``, copied into the manifest.
    wells : sequence of str, optional
        Only these wells (``B/3``, ``B03``...).
    backend, scheduler, workers : optional
        Override ``config.resources``: ``auto|cpu|gpu``; ``threads | processes | ADDRESS``.
    overwrite : bool
        Delete previous outputs in ``out`` first (otherwise: resume).
    progress : bool
        Show a progress bar over fields.
    report : bool
        Aggregate per well and condition and write ``report.html`` at the end.

    Returns
    -------
    RunSummary
    """
    from hcsmito.backend import get_backend
    from hcsmito.io.plate import open_plate

    t0 = time.perf_counter()
    started = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    config = config or load_config()
    backend = backend or config.resources.backend
    scheduler = scheduler or config.resources.scheduler
    workers = workers or config.resources.workers
    if plate_map is None and config.plate_map is not None:
        plate_map = config.plate_map
    # everything the user gave is checked before anything is written or computed:
    # all metadata (a field of several time points is refused, not read at t = 0 alone)
    plate = open_plate(plate_path, time_points="refuse")
    refs = select_fields(plate, wells)
    check_roles(plate, refs, config)  # a channel no field has fails the run, not each field
    conditions: dict[str, str] = {}
    if plate_map is not None:  # before any field runs, not after all of them
        pm = validate_plate_map(plate_map, plate.wells)
        conditions = {str(w): str(c) for w, c in zip(pm["well"], pm["condition"], strict=True)}
    out = Path(out)
    _check_apart(out, plate_path)
    b = get_backend(backend)  # "gpu" without a device fails here
    check_scheduler(scheduler)  # a few seconds at most, before OUT exists
    rd = RunDir(out)
    rd.check_target(overwrite=overwrite)  # a file, another tool's folder, not writable
    with rd.lock():  # a second run into OUT is refused while this one lives
        _prepare_out(rd, plate, overwrite)
        config, thresholds = plate_thresholds(plate, config, backend)
        config, glass = plate_glass(plate, config, backend)
        every, fingerprints = _field_tasks(plate, plate.fields, rd, config, backend, conditions)
        chosen = {(r.well, r.field) for r in refs}
        tasks = [t for t in every if (t.well, t.field) in chosen]
        todo = [t for t in tasks if not _done(rd, t)]
        if todo:
            sized = [with_peak_bytes(plate, t, config.resources.memory_per_field) for t in todo]
            run_fields(sized, run_field, scheduler, workers, backend, progress, config.resources)
        # the tables, manifest and report hold every field done so far with this input and
        # config: `--wells B/3` then `--wells B/2` add up
        kept = [t for t in every if (t.well, t.field) in chosen or _done_earlier(rd, t)]
        entries = _collect(rd, kept)
        for note in sorted({n for e in entries.values() for n in e.get("notes") or []}):
            log.warning("%s: %s", plate.name, note)  # once per run, not once per field
        wall = time.perf_counter() - t0
        if plate_map is not None:
            # keep the plate map with the results: `hcsmito report OUT` works after it moves
            rd.write_bytes(rd.platemap_path, Path(plate_map).read_bytes())
        run = {
            "plate_map": rd.relative(rd.platemap_path) if plate_map is not None else None,
            "plate_thresholds": thresholds,
            "plate_glass": glass,
            "backend": b,
            "scheduler": scheduler,
            "workers": workers,
            "started": started,
            "finished": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "wall_s": wall,
        }
        rd.write_manifest(_manifest(plate, config, run, kept, todo, entries, fingerprints))
        summary = _summary(out, tasks, todo, entries, wall)
        if report:
            summary.report_error = _build_report(out)
    return summary


def _field_tasks(plate, refs, rd: RunDir, config: Config, backend: str | None, conditions=None):
    """One task per selected field, keyed by the field's fingerprint, the config hash and
    the hcsmito version; and the fingerprints by ``well/field``."""
    chash = config_hash(config)
    cfg_json = config.model_dump(mode="json")
    fingerprints: dict[str, str] = {}
    tasks: list[FieldTask] = []
    for r in refs:
        fp = field_fingerprint(Path(plate.path), r.path)
        fingerprints[f"{r.well}/{r.field}"] = fp
        key = hashlib.sha256(f"{fp}|{chash}|{__version__}".encode()).hexdigest()[:16]
        tasks.append(
            FieldTask(
                plate_path=str(Path(plate.path).resolve()),
                plate_name=plate.name,
                well=r.well,
                well_path=r.well_path,
                field=r.field,
                out=str(rd.root.resolve()),
                key=key,
                config=cfg_json,
                backend=backend,
                condition=(conditions or {}).get(r.well),
            )
        )
    return tasks, fingerprints


def _collect(rd: RunDir, tasks: Sequence[FieldTask]) -> dict[str, dict]:
    """Every task's ledger entry (a missing one is a failure), the tables compacted."""
    entries = {
        t.stem: rd.read_ledger(t.stem) or {"status": "failed", "error": "no result"} for t in tasks
    }
    rd.compact(
        [FieldOutcome(t.plate_name, t.well, t.field, entries[t.stem].get("status")) for t in tasks]
    )
    return entries


def _manifest(plate, config: Config, run, tasks, todo, entries, fingerprints) -> dict[str, Any]:
    """The manifest: the plate, the config, the run (``run``: plate map, plate thresholds
    and glass, backend, scheduler, times), the software and every field."""
    b = run["backend"]
    keys = ("status", "error", "timings", "notes", "qc_flags", "qc")
    return {
        "hcsmito": __version__,
        "plate": plate.name,
        "plate_path": str(Path(plate.path).resolve()),
        "ngff_version": plate.version,
        "plate_map": run["plate_map"],
        "config": config.model_dump(mode="json"),
        "config_hash": config_hash(config),
        "plate_thresholds": run["plate_thresholds"],
        "plate_glass": run["plate_glass"],
        "versions": _versions(),
        "backend": b.name,
        "device": b.device,
        **{k: run[k] for k in ("scheduler", "workers", "started", "finished", "wall_s")},
        "processed_this_run": [f"{t.well}/{t.field}" for t in todo],
        "fields": [
            {
                "well": t.well,
                "field": t.field,
                "fingerprint": fingerprints[f"{t.well}/{t.field}"],
                **{k: entries[t.stem].get(k) for k in keys},
            }
            for t in tasks
        ],
    }


def _summary(out: Path, tasks, todo, entries, wall: float) -> RunSummary:
    def name(t: FieldTask) -> str:
        return f"{t.well}/{t.field}"

    ok = {t.stem: entries[t.stem].get("status") == "ok" for t in tasks}
    return RunSummary(
        out,
        processed=[name(t) for t in todo],
        skipped=[name(t) for t in tasks if t not in todo],
        failed={name(t): entries[t.stem].get("error") or "failed" for t in tasks if not ok[t.stem]},
        wall_s=wall,
        flagged={
            name(t): list(entries[t.stem]["qc_flags"])
            for t in tasks
            if ok[t.stem] and entries[t.stem].get("qc_flags")
        },
    )


def _build_report(out: Path) -> str | None:
    """Aggregates and report.html; None, or why they could not be built (the fields'
    results stay written: `hcsmito report OUT` builds the report again)."""
    from hcsmito.report import build_report

    try:
        build_report(out)
    except Exception as exc:
        log.debug("report for %s failed", out, exc_info=True)
        return f"{type(exc).__name__}: {exc}"
    return None


def field_status(out: str | Path) -> pd.DataFrame:
    """Per-field state of an output folder (from its ledger): well, field, status,
    seconds, QC flags (codes joined by ","; empty for none and for failed fields), error."""
    return RunDir(out).status()
