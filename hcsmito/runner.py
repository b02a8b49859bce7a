"""The batch runner: one Dask task per field, resumable, with NGFF labels and Parquet out.

Layout of ``OUT``::

    labels.zarr/               NGFF 0.5 plate mirroring the input's wells and fields: per
                               field the detection channels (uint16) and labels msc, jurkat, foci
    tables/<name>.parquet      foci, cells, jurkat, tnt, fields: compacted at the end of a run
    tables/parts/<name>/*.parquet  each field's rows (written to a temporary name, renamed)
    ledger/<well>_f<field>.json    each field's status, error, timings and input key
    qc/<well>_f<field>.png     max projections with label contours
    manifest.json              config, versions, backend, device, fingerprints, per-field status

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
import json
import logging
import os
import platform
import time
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hcsmito import __version__
from hcsmito.config import Config, config_hash, load_config

__all__ = [
    "FieldTask",
    "RunSummary",
    "field_status",
    "plate_thresholds",
    "run_field",
    "run_plate",
]

log = logging.getLogger(__name__)

TABLES = ("foci", "cells", "jurkat", "tnt", "fields")
#: Voxels of one sampled field that enter a plate-level threshold histogram (a regular
#: subsample of larger fields: the histogram of 4 M voxels is the field's to ~0.1 %).
_THRESHOLD_SAMPLE_VOXELS = 1 << 22
_ID_COLUMN = {
    "foci": "focus_id",
    "cells": "cell_id",
    "jurkat": "jurkat_id",
    "tnt": "tnt_id",
    "fields": None,
}


@dataclass(frozen=True)
class FieldTask:
    """Everything a worker needs to process one field (picklable)."""

    plate_path: str
    plate_name: str
    well: str  # "B/3"
    well_path: str  # "B/03"
    field: int
    out: str
    key: str
    config: dict
    backend: str | None

    @property
    def stem(self) -> str:
        return f"{self.well.replace('/', '')}_f{self.field}"

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

    @property
    def ok(self) -> bool:
        return not self.failed

    def flag_summary(self) -> str:
        """``"3 fields flagged: saturated 2, vignetting 1"``, or ``""``."""
        from hcsmito.qc import format_flag_counts

        return format_flag_counts([tuple(v) for v in self.flagged.values()])


# --------------------------------------------------------------------------- helpers


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _atomic_write_json(path: Path, obj: Any) -> None:
    _atomic_write_bytes(path, json.dumps(obj, indent=1, default=str).encode())


def _atomic_write_parquet(path: Path, df: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


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


def _read_channels(plate, well_path: str, field: int, config: Config):
    """One field's channels by role, read now: ``(image, roles, {role: ndarray})``."""
    img = plate.read_field(well_path, field)
    roles = img.resolve_roles(config.channels.roles())
    channels = {
        # read in this task: not as new tasks of the cluster the task runs on
        r: np.asarray(img.channel(i).compute(scheduler="synchronous"))
        for r, i in roles.items()
        if i is not None
    }
    return img, roles, channels


def run_field(task: FieldTask) -> dict:
    """Process one field and write its outputs; never raises for a bad field.

    Returns the field's ledger entry (also written to ``OUT/ledger``): ``status`` is
    ``ok`` or ``failed`` (with ``error``), ``timings`` has seconds per stage.
    """
    from hcsmito.pipeline import process_field

    out = Path(task.out)
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
        t_load = time.perf_counter()
        img, roles, channels = _read_channels(plate, task.well_path, task.field, config)
        t_read = time.perf_counter() - t_load
        res = process_field(
            channels,
            voxel_size=img.voxel_size,
            config=config,
            backend=task.backend,
            where=where,
        )
        t_w = time.perf_counter()
        labels = {r: img.channel_labels[i] for r, i in roles.items() if i is not None}
        _write_field_outputs(out, task, img.voxel_size, labels, channels, res)
        timings = {"read": t_read, **res.timings, "write": time.perf_counter() - t_w}
        entry.update(
            status="ok",
            error=None,
            notes=res.notes,
            timings=timings,
            qc_flags=list(res.qc_flags),
            # JSON has no inf / NaN: a measure that could not be made is null
            qc={k: (float(v) if np.isfinite(v) else None) for k, v in res.qc.items()},
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
    _atomic_write_json(out / "ledger" / f"{task.stem}.json", entry)
    return entry


def _write_field_outputs(out: Path, task: FieldTask, voxel_size, labels, channels, res) -> None:
    from hcsmito.io.writer import write_image, write_labels

    tables = dict(res.tables)
    for name, df in tables.items():
        df = df.copy()
        df.insert(0, "field", np.int32(task.field))
        df.insert(0, "well", task.well)
        df.insert(0, "plate", task.plate_name)
        _atomic_write_parquet(out / "tables" / "parts" / name / f"{task.stem}.parquet", df)

    ndim = next(iter(channels.values())).ndim
    axes = "zyx"[3 - ndim :]
    vox = {a: voxel_size[a] for a in axes}
    roles = [r for r in ("msc", "mito", "actin") if r in channels]
    stack = []
    for r in roles:
        a = res.processed.get(r, channels[r])
        stack.append(np.clip(np.rint(a), 0, 65535).astype(np.uint16))
    lab_plate = out / "labels.zarr"
    write_image(
        lab_plate,
        task.well_path,
        task.field,
        np.stack(stack),
        axes="c" + axes,
        voxel_size=vox,
        channel_labels=[labels[r] for r in roles],
    )
    for name, lab in res.labels.items():
        write_labels(lab_plate, task.well_path, task.field, name, lab, axes=axes, voxel_size=vox)
    _write_qc(out / "qc" / f"{task.stem}.png", channels, res.labels)


def _outline(lab: np.ndarray) -> np.ndarray:
    edge = np.zeros(lab.shape, bool)
    edge[:-1] |= lab[:-1] != lab[1:]
    edge[1:] |= lab[:-1] != lab[1:]
    edge[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    edge[:, 1:] |= lab[:, :-1] != lab[:, 1:]
    return edge & (lab > 0)


def _write_qc(path: Path, channels: dict, labels: dict) -> None:
    """Max projections (GFP green, mito magenta) with MSC (white), Jurkat (cyan), foci (yellow)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.image import imsave

    def proj(a):
        a = np.asarray(a, np.float32)
        p = a.max(axis=0) if a.ndim == 3 else a
        lo, hi = np.percentile(p, (1, 99.8))
        return np.clip((p - lo) / max(hi - lo, 1e-6), 0, 1)

    shape = next(iter(channels.values())).shape[-2:]
    g = proj(channels["msc"]) if "msc" in channels else np.zeros(shape, np.float32)
    m = proj(channels["mito"])
    rgb = np.stack([m, g, m], axis=-1) * 0.9

    def lproj(lab):
        return lab.max(axis=0) if lab.ndim == 3 else lab

    for name, color in (("msc", (1, 1, 1)), ("jurkat", (0, 1, 1)), ("foci", (1, 1, 0))):
        if name in labels and labels[name].any():
            rgb[_outline(lproj(labels[name]))] = color
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    imsave(tmp, rgb)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- driver


def _select_fields(plate, wells: Iterable[str] | None):
    from hcsmito.io.names import normalize_well

    refs = plate.fields
    if not wells:
        return refs
    wanted = {}
    for w in wells:
        wanted[normalize_well(w)] = w
    missing = [w for k, w in wanted.items() if k not in {r.well for r in refs}]
    if missing:
        raise ValueError(
            f"plate {plate.name}: wells {missing} are not in the plate "
            f"(wells: {sorted({r.well for r in refs})})"
        )
    return [r for r in refs if r.well in wanted]


def plate_thresholds(
    plate, config: Config, backend: str | None = None
) -> tuple[Config, dict[str, dict]]:
    """Plate-level thresholds of the cell masks (``config.plate_threshold``).

    For each role listed (``msc``, ``jurkat``), ``sample_fields`` fields spread evenly over
    the whole plate (whatever wells a run selects, so that a partial run cuts as the full
    one does) are read, prepared as :func:`hcsmito.pipeline.process_field` prepares them
    (deconvolution, background), smoothed as the stage smooths them, and their pooled
    histogram thresholded (:func:`hcsmito.stages.threshold.plate_threshold`). A field
    that cannot be read is left out of the sample with a warning.

    Returns
    -------
    config : Config
        ``config`` with ``threshold_method: manual`` and the value set for those roles.
    info : dict
        Per role: ``value``, ``method`` and the ``fields`` sampled (for the manifest).
    """
    from hcsmito.backend import get_backend
    from hcsmito.pipeline import detection_images
    from hcsmito.stages.segmentation import jurkat_threshold_image, msc_threshold_image
    from hcsmito.stages.threshold import plate_threshold

    pt = config.plate_threshold
    if not pt.roles:
        return config, {}
    b = get_backend(backend or config.resources.backend)
    refs = _select_fields(plate, None)
    picks = sorted(
        {int(i) for i in np.linspace(0, len(refs) - 1, min(pt.sample_fields, len(refs))).round()}
    )
    samples: dict[str, list[np.ndarray]] = {r: [] for r in pt.roles}
    used: list[str] = []
    last_error = ""
    for i in picks:
        ref = refs[i]
        where = f"plate {plate.name}, well {ref.well}, field {ref.field}"
        try:
            img, roles, channels = _read_channels(plate, ref.well_path, ref.field, config)
            if "msc" in pt.roles and roles.get("msc") is None:
                raise ValueError(
                    f"{where}: plate_threshold.roles lists msc but the field has no msc "
                    "channel: set channels.msc or remove msc from plate_threshold.roles"
                )
            det = detection_images(
                channels, voxel_size=img.voxel_size, config=config, backend=b, where=where
            )
        except Exception as exc:  # a bad field is left out; the run reports it itself
            log.warning("%s: left out of the plate threshold sample: %s", where, exc)
            last_error = str(exc)
            continue
        for role in pt.roles:
            if role == "msc":
                sm = msc_threshold_image(
                    det["msc"],
                    voxel_size=img.voxel_size,
                    smooth_um=config.msc.smooth_um,
                    smooth_z_um=config.msc.smooth_z_um,
                )
            else:
                sm = jurkat_threshold_image(
                    det["mito"], voxel_size=img.voxel_size, smooth_um=config.jurkat.smooth_um
                )
            flat = sm.reshape(-1)
            step = max(1, -(-flat.size // _THRESHOLD_SAMPLE_VOXELS))
            samples[role].append(b.to_host(flat[::step]))  # device->host: <= 4 M values
        used.append(f"{ref.well}/{ref.field}")
    if not used:
        raise ValueError(
            f"plate {plate.name}: no field of the plate-threshold sample could be used; the "
            f"last error: {last_error.rstrip('.')}. Fix that, or set plate_threshold.roles: []"
        )
    update: dict[str, Any] = {}
    info: dict[str, dict] = {}
    for role, arrays in samples.items():
        value = plate_threshold(arrays, method=pt.method)
        info[role] = {"value": value, "method": pt.method, "fields": used}
        section = config.msc if role == "msc" else config.jurkat
        update[role] = section.model_copy(
            update={"threshold_method": "manual", "threshold_value": value}
        )
        log.info(
            "plate %s: %s threshold %.6g (%s over %d fields)",
            plate.name,
            role,
            value,
            pt.method,
            len(used),
        )
    return config.model_copy(update=update), info


def plate_glass(plate, config: Config, backend: str | None = None) -> tuple[Config, dict]:
    """The plate's glass reference: the median of the per-field glass estimates
    (:func:`hcsmito.stages.glass.estimate_glass` on the raw channels) over
    ``plate_threshold.sample_fields`` fields spread over the plate, set as
    ``tnt.glass_reference_um``: a field whose own estimate is implausible, or further than
    ``tnt.glass_tolerance_um`` from it, uses it (source ``plate``) and is flagged.

    Skipped (config unchanged) when the glass is given (``tnt.glass_z_um``), the reference
    set by hand, or no sampled field has an actin channel. Cheap: tile means of the raw
    channels, no deconvolution or segmentation.

    Returns
    -------
    config : Config
        ``config`` with ``tnt.glass_reference_um`` set (when a reference was found).
    info : dict
        ``z_um`` (None when none), ``fields`` and ``values`` (µm) of the plausible
        estimates, and ``left_out`` (field: reason), for the manifest.
    """
    from hcsmito.backend import get_backend
    from hcsmito.stages.glass import estimate_glass

    tnt = config.tnt
    if tnt.glass_z_um is not None or tnt.glass_reference_um is not None:
        return config, {}
    b = get_backend(backend or config.resources.backend)
    refs = _select_fields(plate, None)
    n = min(config.plate_threshold.sample_fields, len(refs))
    picks = sorted({int(i) for i in np.linspace(0, len(refs) - 1, n).round()}) if n else []
    fields: list[str] = []
    values: list[float] = []
    left_out: dict[str, str] = {}
    for i in picks:
        ref = refs[i]
        key = f"{ref.well}/{ref.field}"
        try:
            img, roles, channels = _read_channels(plate, ref.well_path, ref.field, config)
            if "actin" not in channels:
                left_out[key] = "no actin channel"
                continue
            g = estimate_glass(
                {r: b.asarray(channels[r]) for r in ("msc", "actin", "mito") if r in channels},
                voxel_size=img.voxel_size,
            )
        except Exception as exc:  # a bad field is left out; the run reports it itself
            left_out[key] = str(exc)
            continue
        if g.plausible:
            fields.append(key)
            values.append(round(g.z_um, 3))
        else:
            left_out[key] = g.reason or "no glass"
    info: dict[str, Any] = {
        "z_um": float(np.median(values)) if values else None,
        "tolerance_um": tnt.glass_tolerance_um,
        "fields": fields,
        "values": values,
        "left_out": left_out,
    }
    if not values:
        return config, info
    log.info("plate %s: glass %.2f µm (median of %d fields)", plate.name, info["z_um"], len(values))
    update = {"tnt": tnt.model_copy(update={"glass_reference_um": info["z_um"]})}
    return config.model_copy(update=update), info


def _read_ledger(out: Path, task: FieldTask) -> dict | None:
    p = out / "ledger" / f"{task.stem}.json"
    try:
        return json.loads(p.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _done(out: Path, task: FieldTask) -> bool:
    entry = _read_ledger(out, task)
    if not entry or entry.get("status") != "ok" or entry.get("key") != task.key:
        return False
    return all((out / "tables" / "parts" / t / f"{task.stem}.parquet").exists() for t in TABLES)


def _prepare_out(out: Path, plate, overwrite: bool) -> None:
    import shutil

    from hcsmito.io.writer import create_plate

    manifest = out / "manifest.json"
    if out.exists() and any(out.iterdir()):
        if overwrite:
            for name in (
                "labels.zarr",
                "tables",
                "ledger",
                "qc",
                "figures",
                "manifest.json",
                "report.html",
                "platemap.csv",
            ):
                p = out / name
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
        elif not manifest.exists() and not (out / "ledger").exists():
            raise FileExistsError(
                f"{out} exists and is not an hcsmito output folder: choose another --out "
                "or pass --overwrite"
            )
        else:
            old = json.loads(manifest.read_text()) if manifest.exists() else {}
            if old.get("plate_path") not in (None, str(Path(plate.path).resolve())):
                raise FileExistsError(
                    f"{out} holds results of another plate ({old.get('plate_path')}): "
                    "choose another --out or pass --overwrite"
                )
    out.mkdir(parents=True, exist_ok=True)
    lab = out / "labels.zarr"
    if not lab.exists():
        counts: dict[str, int] = {}
        for r in plate.fields:
            counts[r.well_path] = counts.get(r.well_path, 0) + 1
        create_plate(lab, wells=list(counts), fields_per_well=counts, name=plate.name)


def _compact(out: Path, tasks: Sequence[FieldTask], entries: dict[str, dict]) -> None:
    """Concatenate the fields' parts into ``tables/<name>.parquet`` (sorted, one per field)."""
    for name in TABLES:
        frames = []
        for t in tasks:
            if entries.get(t.stem, {}).get("status") != "ok":
                continue
            p = out / "tables" / "parts" / name / f"{t.stem}.parquet"
            if p.exists():
                frames.append(pd.read_parquet(p))
        nonempty = [f for f in frames if len(f)]
        if nonempty:
            df = pd.concat(nonempty, ignore_index=True)
        elif frames:
            df = frames[0].iloc[:0]
        elif name == "fields":
            df = _fields_schema()
        else:
            continue
        if name == "fields":
            failed = [
                {"plate": t.plate_name, "well": t.well, "field": t.field, "status": "failed"}
                for t in tasks
                if entries.get(t.stem, {}).get("status") == "failed"
            ]
            if failed:
                bad = pd.DataFrame(failed)
                schema = df.dtypes if len(df.columns) else _fields_schema().dtypes
                df = pd.concat([df, bad], ignore_index=True) if len(df) else bad
                df = df.reindex(columns=schema.index).astype(schema.to_dict())
        keys = ["well", "field"] + ([_ID_COLUMN[name]] if _ID_COLUMN[name] else [])
        df = _sort_wells(df, keys)
        _atomic_write_parquet(out / "tables" / f"{name}.parquet", df)


def _fields_schema() -> pd.DataFrame:
    from hcsmito.pipeline import empty_table

    df = empty_table("fields")
    df.insert(0, "field", pd.Series(dtype="int32"))
    df.insert(0, "well", pd.Series(dtype="object"))
    df.insert(0, "plate", pd.Series(dtype="object"))
    return df


def _sort_wells(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    if not len(df):
        return df.reset_index(drop=True)
    from hcsmito.io.names import well_sort_key

    order = sorted(
        range(len(df)),
        key=lambda i: (well_sort_key(df["well"].iat[i]), *(df[k].iat[i] for k in keys[1:])),
    )
    return df.iloc[order].reset_index(drop=True)


def _dashboard_link(client, *, local: bool) -> str:
    """The dashboard's address; a local cluster's binds to 127.0.0.1, so link there."""
    if local:
        port = client.scheduler_info().get("services", {}).get("dashboard")
        if port:
            return f"http://127.0.0.1:{port}/status"
    return client.dashboard_link


def slurm_cluster(slurm):
    """A dask-jobqueue ``SLURMCluster`` from ``config.resources.slurm`` (no job submitted yet).

    ``cluster.job_script()`` shows the batch script each worker job runs. The scheduler and
    dashboard listen on the node's address so that the jobs can reach them.
    """
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise ValueError(
            "scheduler 'slurm' needs dask-jobqueue: pip install 'hcsmito[slurm]'"
        ) from None
    extra = list(slurm.job_extra_directives)
    if slurm.gpus:
        extra.append(f"--gres=gpu:{slurm.gpus}")
    return SLURMCluster(
        queue=slurm.queue,
        account=slurm.account,
        cores=slurm.cores,
        processes=slurm.processes,
        memory=slurm.memory,
        walltime=slurm.walltime,
        job_extra_directives=extra,
        local_directory=slurm.local_directory,
        scheduler_options={"dashboard_address": ":0"},
    )


@contextlib.contextmanager
def _client(scheduler: str, workers: int | None, backend: str | None, quiet: bool, slurm=None):
    """A distributed Client for ``threads | processes | ADDRESS``, bound to 127.0.0.1."""
    from distributed import Client, LocalCluster

    n = workers or max(1, min(4, os.cpu_count() or 1))
    cluster = None
    if scheduler == "threads":
        cluster = LocalCluster(
            processes=False,
            n_workers=1,
            threads_per_worker=n,
            dashboard_address="127.0.0.1:0",  # in-process transport: no port but this one
        )
    elif scheduler == "processes":
        if backend == "gpu":
            try:
                from dask_cuda import LocalCUDACluster  # one worker per GPU

                cluster = LocalCUDACluster(host="127.0.0.1", dashboard_address="127.0.0.1:0")
            except ImportError:
                log.info("dask-cuda is not installed: one process per worker instead")
        if cluster is None:
            cluster = LocalCluster(
                processes=True,
                n_workers=n,
                threads_per_worker=1,
                dashboard_address="127.0.0.1:0",
                host="127.0.0.1",
            )
    elif scheduler == "slurm":
        cluster = slurm_cluster(slurm)
        cluster.scale(jobs=slurm.jobs)
    client = Client(cluster) if cluster is not None else Client(scheduler)
    try:
        if not quiet:
            print(f"dask dashboard: {_dashboard_link(client, local=cluster is not None)}")
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


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
    from hcsmito.io.plate import open_plate

    t0 = time.perf_counter()
    started = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    config = config or load_config()
    backend = backend or config.resources.backend
    scheduler = scheduler or config.resources.scheduler
    workers = workers or config.resources.workers
    if plate_map is None and config.plate_map is not None:
        plate_map = config.plate_map
    plate = open_plate(plate_path)  # validates all metadata before any computation
    refs = _select_fields(plate, wells)
    out = Path(out)
    _prepare_out(out, plate, overwrite)
    config, thresholds = plate_thresholds(plate, config, backend)
    config, glass = plate_glass(plate, config, backend)

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
                out=str(out.resolve()),
                key=key,
                config=cfg_json,
                backend=backend,
            )
        )
    todo = [t for t in tasks if not _done(out, t)]
    skipped = [f"{t.well}/{t.field}" for t in tasks if t not in todo]

    from hcsmito.backend import get_backend

    b = get_backend(backend)
    if todo:
        _run_tasks(todo, scheduler, workers, backend, progress, config.resources.slurm)

    entries = {
        t.stem: _read_ledger(out, t) or {"status": "failed", "error": "no result"} for t in tasks
    }
    _compact(out, tasks, entries)
    failed = {
        f"{t.well}/{t.field}": entries[t.stem].get("error") or "failed"
        for t in tasks
        if entries[t.stem].get("status") != "ok"
    }
    for note in sorted({n for e in entries.values() for n in e.get("notes") or []}):
        log.warning("%s: %s", plate.name, note)  # once per run, not once per field
    wall = time.perf_counter() - t0
    manifest = {
        "hcsmito": __version__,
        "plate": plate.name,
        "plate_path": str(Path(plate.path).resolve()),
        "ngff_version": plate.version,
        "plate_map": str(plate_map) if plate_map else None,
        "config": cfg_json,
        "config_hash": chash,
        "plate_thresholds": thresholds,
        "plate_glass": glass,
        "versions": _versions(),
        "backend": b.name,
        "device": b.device,
        "scheduler": scheduler,
        "workers": workers,
        "started": started,
        "finished": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "wall_s": wall,
        "processed_this_run": [f"{t.well}/{t.field}" for t in todo],
        "fields": [
            {
                "well": t.well,
                "field": t.field,
                "fingerprint": fingerprints[f"{t.well}/{t.field}"],
                **{
                    k: entries[t.stem].get(k)
                    for k in ("status", "error", "timings", "notes", "qc_flags", "qc")
                },
            }
            for t in tasks
        ],
    }
    if plate_map is not None:
        # keep the plate map with the results: `hcsmito report OUT` works after it moves
        _atomic_write_bytes(out / "platemap.csv", Path(plate_map).read_bytes())
        manifest["plate_map"] = "platemap.csv"
    _atomic_write_json(out / "manifest.json", manifest)
    flagged = {
        f"{t.well}/{t.field}": list(entries[t.stem].get("qc_flags") or [])
        for t in tasks
        if entries[t.stem].get("status") == "ok" and entries[t.stem].get("qc_flags")
    }
    if report:
        _build_report(out)
    return RunSummary(out, [f"{t.well}/{t.field}" for t in todo], skipped, failed, wall, flagged)


def _build_report(out: Path) -> None:
    """Aggregates and report.html; a failure here is logged, never fails a finished run."""
    from hcsmito.report import build_report

    try:
        build_report(out)
    except Exception as exc:
        log.error("report for %s could not be built: %s (run `hcsmito report %s`)", out, exc, out)


def _run_tasks(todo, scheduler, workers, backend, progress, slurm) -> None:
    from distributed import as_completed

    quiet = not progress
    with _client(scheduler, workers, backend, quiet, slurm) as client:
        futures = [client.submit(run_field, t, key=t.name, pure=False) for t in todo]
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(futures), unit="field", desc="fields")
        try:
            for fut in as_completed(futures):
                entry = fut.result()
                if bar is not None:
                    bar.update(1)
                    if entry.get("status") != "ok":
                        bar.write(
                            f"failed: {entry['well']} field {entry['field']}: {entry['error']}"
                        )
        finally:
            if bar is not None:
                bar.close()


def field_status(out: str | Path) -> pd.DataFrame:
    """Per-field state of an output folder (from its ledger): well, field, status,
    seconds, QC flags (codes joined by ","; empty for none and for failed fields), error."""
    out = Path(out)
    rows = []
    for p in sorted((out / "ledger").glob("*.json")):
        with contextlib.suppress(json.JSONDecodeError):
            e = json.loads(p.read_text())
            rows.append(
                {
                    "well": e.get("well"),
                    "field": e.get("field"),
                    "status": e.get("status"),
                    "seconds": round(float(e.get("wall_s") or 0.0), 2),
                    "qc_flags": ",".join(e.get("qc_flags") or []),
                    "error": e.get("error") or "",
                }
            )
    if not rows and not out.exists():
        raise FileNotFoundError(f"{out} does not exist: run `hcsmito run --out {out}` first")
    cols = ["well", "field", "status", "seconds", "qc_flags", "error"]
    df = pd.DataFrame(rows, columns=cols)
    return _sort_wells(df, ["well", "field"]) if len(df) else df
