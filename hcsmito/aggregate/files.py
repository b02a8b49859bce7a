"""A run folder's aggregates: the tables read from ``OUT/tables``, aggregated, and written
back (:func:`write_aggregates`, :func:`read_aggregates`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from hcsmito import schema
from hcsmito.aggregate.tables import aggregate_tables
from hcsmito.io.rundir import RunDir
from hcsmito.platemap import read_plate_map


def read_tables(out_dir: str | Path, names: Sequence[str] | None = None) -> dict[str, pd.DataFrame]:
    """The per-object / per-field tables of a run that exist in ``OUT/tables`` (default:
    every per-field table of :mod:`hcsmito.schema`)."""
    rd = RunDir(out_dir)
    if not rd.has_table("fields"):
        raise FileNotFoundError(
            f"{rd.table('fields')} is absent: run 'hcsmito run' into {out_dir} first"
        )
    return rd.read_tables(schema.field_tables() if names is None else names)


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """``OUT/manifest.json`` as a dict (empty when absent)."""
    return RunDir(out_dir).read_manifest()


def _setting(config: Any, section: str, key: str, default: Any) -> Any:
    """``config.<section>.<key>`` from a Config model or a plain mapping, else default."""
    if config is None:
        return default
    sec = config.get(section) if isinstance(config, Mapping) else getattr(config, section, None)
    if sec is None:
        return default
    val = sec.get(key, default) if isinstance(sec, Mapping) else getattr(sec, key, default)
    return default if val is None and default is not None else val


def write_aggregates(
    out_dir: str | Path,
    *,
    plate_map: str | Path | pd.DataFrame | None = None,
    config: Any = None,
    **options: Any,
) -> dict[str, Any]:
    """Aggregate a run folder and write ``OUT/tables/{wells,conditions,replicates,trends}
    .parquet`` and ``OUT/tables/aggregate.json`` (the summary).

    Parameters
    ----------
    out_dir : path
        The run folder (``OUT/tables/fields.parquet`` must exist).
    plate_map : path or DataFrame, optional
        Default: ``manifest["plate_map"]``, else the config's ``plate_map``, else
        ``OUT/platemap.csv``; without one, per-well results only.
    config : Config or mapping, optional
        Default: ``manifest["config"]``. Read: ``plate_map`` and, when present, the
        ``statistics`` section (``unit``, ``control``, ``posthoc``, ``calibrate``,
        ``max_share``, ``calibrate_by``, ``readouts``, ``exclude_flags``).
    **options
        Keyword arguments of :func:`aggregate_tables`, overriding the config. A
        ``control`` given here must be a condition of the plate map (ValueError naming
        the conditions); the config's may be absent (no comparisons, with a note).

    Returns
    -------
    dict
        What :func:`aggregate_tables` returns.
    """
    out_dir = Path(out_dir)
    tables = read_tables(out_dir)
    manifest = read_manifest(out_dir)
    if config is None:
        config = manifest.get("config") or {}
    if plate_map is None:
        plate_map = _find_plate_map(out_dir, manifest, config)
    if plate_map is not None and not isinstance(plate_map, pd.DataFrame):
        # not checked against the wells with data: a run over some wells is legitimate;
        # aggregate_tables notes mapped wells without fields and unmapped wells
        plate_map = read_plate_map(plate_map)
    control = options.get("control")
    if control is not None and plate_map is not None:
        conditions = list(dict.fromkeys(str(c) for c in plate_map["condition"].dropna()))
        if str(control) not in conditions:
            raise ValueError(
                f"control {control!r} is not a condition of the plate map "
                f"({plate_map.attrs.get('source', 'given')}): its conditions are "
                f"{', '.join(conditions)}"
            )
    kw: dict[str, Any] = {}
    for key in ("unit", "control", "posthoc", "calibrate", "max_share", "calibrate_by",
                "calibrate_markers", "marker_max_share", "readouts", "exclude_flags"):  # fmt: skip
        val = _setting(config, "statistics", key, None)
        if val is not None:
            kw[key] = val
    kw.update(options)
    res = aggregate_tables(tables, plate_map, **kw)
    rd = RunDir(out_dir)
    for name in schema.aggregate_tables():
        rd.write_table(name, _string_columns(res[name]))
    summary = dict(res["summary"])
    summary["plate_map"] = None if plate_map is None else plate_map.attrs.get("source")
    res["summary"] = summary
    rd.write_json(rd.summary_path, summary)
    return res


def _find_plate_map(out_dir: Path, manifest: Mapping[str, Any], config: Any) -> Path | None:
    """The plate map of a run: ``manifest["plate_map"]``, else the config's ``plate_map``
    (each as given, then relative to ``OUT``), else ``OUT/platemap.csv``."""
    cfg_pm = (
        config.get("plate_map")
        if isinstance(config, Mapping)
        else getattr(config, "plate_map", None)
    )
    named = [Path(p) for p in (manifest.get("plate_map"), cfg_pm) if p]
    for p in named:
        for cand in (p, out_dir / p) if not p.is_absolute() else (p,):
            if cand.is_file():
                return cand
    local = RunDir(out_dir).platemap_path
    if local.is_file():
        return local
    if named:
        raise FileNotFoundError(
            f"plate map {named[0]} named by the run in {out_dir} is not found: pass it again "
            "(hcsmito report OUT --plate-map FILE) or copy it to OUT/platemap.csv"
        )
    return None


def _string_columns(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    for c in df.columns:
        if df[c].dtype == object:
            df[c] = df[c].astype("string")
    return df


def read_aggregates(out_dir: str | Path) -> dict[str, Any]:
    """The aggregate tables and summary written by :func:`write_aggregates`."""
    rd = RunDir(out_dir)
    res: dict[str, Any] = {
        name: rd.read_table(name) if rd.has_table(name) else pd.DataFrame()
        for name in schema.aggregate_tables()
    }
    p = rd.summary_path
    res["summary"] = json.loads(p.read_text()) if p.is_file() else {}
    return res
