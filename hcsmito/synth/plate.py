"""Write a synthetic co-culture plate with its plate map and ground truth.

Layout written for ``out = DIR/STEM.zarr``::

    DIR/STEM.zarr              OME-NGFF HCS plate (GFP, MitoTracker Red, Phalloidin,
                               and Hoechst, Annexin V when the parameters draw them)
    DIR/STEM_platemap.csv      well,condition,replicate,day
    DIR/STEM_truth/labels.zarr NGFF plate of truth label images msc, jurkat, foci, tnt
                               (and nuclei with a Hoechst or annexin V channel)
    DIR/STEM_truth/*.parquet   truth tables msc, jurkat, foci, tnt (and nuclei), fields
                               (every row with plate, well ("B/3"), field)
    DIR/STEM_truth/synth.json  generator parameters, seed and per-field seeds
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from hcsmito.synth.field import SynthField, channel_colors, generate_field
from hcsmito.synth.params import PLATE_CONDITIONS, SynthParams, resolve_condition

__all__ = ["default_layout", "field_seed", "read_truth", "write_synth_plate"]

TRUTH_TABLES = ("msc", "jurkat", "foci", "tnt")
FATE_TABLES = ("nuclei",)  # with a Hoechst or annexin V channel (SynthParams.draws_fate)


def default_layout(conditions: Sequence[str] = PLATE_CONDITIONS) -> dict[str, str]:
    """Rows B-C x columns 2...: one condition per column (default ``PLATE_CONDITIONS``;
    e.g. ``FATE_CONDITIONS``), two replicate wells each."""
    for c in conditions:
        resolve_condition(c)
    return {
        f"{row}{col}": cond for col, cond in enumerate(conditions, start=2) for row in ("B", "C")
    }


def _layout(
    wells: Sequence[str] | Mapping[str, str] | None,
    conditions: Sequence[str] | None = None,
) -> dict[str, str]:
    from hcsmito.io.names import parse_well

    if conditions is not None:
        conditions = tuple(conditions)
        if not conditions:
            raise ValueError("conditions is empty: give names such as ['DMSO', 'ara-C'] or None")
        if isinstance(wells, Mapping):
            raise ValueError("conditions: give wells as a list, not a well -> condition mapping")
    order = PLATE_CONDITIONS if conditions is None else conditions
    if wells is None:
        return default_layout(order)
    if isinstance(wells, Mapping):
        for w, c in wells.items():
            try:
                resolve_condition(c)
            except ValueError as err:
                raise ValueError(f"well {w}: {err}") from None
        return dict(wells)
    if isinstance(wells, str):
        wells = [w for w in wells.replace(",", " ").split() if w]
    wells = list(wells)
    if not wells:
        raise ValueError("wells is empty: give well names such as ['B2', 'B3'] or None")
    for c in order:
        resolve_condition(c)
    cols = sorted({parse_well(w)[1] for w in wells})
    by_col = {c: order[i % len(order)] for i, c in enumerate(cols)}
    return {w: by_col[parse_well(w)[1]] for w in wells}


def _well_name(name: str) -> str:
    from hcsmito.io.names import parse_well

    row, col = parse_well(name)
    return f"{row}/{col}"


def field_seed(seed: int, well: str, field: int) -> int:
    """The seed of one field: a function of the plate seed, the well and the field index."""
    from hcsmito.io.names import parse_well

    row, col = parse_well(well)
    key = [int(seed), *(ord(ch) for ch in row), int(col), int(field)]
    return int(np.random.SeedSequence(key).generate_state(1, dtype=np.uint32)[0])


def write_synth_plate(
    out: str | Path,
    *,
    seed: int = 0,
    wells: Sequence[str] | Mapping[str, str] | None = None,
    fields: int = 2,
    shape: Sequence[int] | None = None,
    ngff: str = "0.5",
    params: SynthParams | None = None,
    channels: Sequence[str] | None = None,
    conditions: Sequence[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Generate a plate of synthetic co-culture fields, its plate map and its truth.

    Parameters
    ----------
    out : str or Path
        The plate to write, ``DIR/STEM.zarr``.
    seed : int
        Plate seed; each field's seed is :func:`field_seed` ``(seed, well, field)``.
    wells : sequence of str or mapping of str to str, optional
        Wells to write (conditions assigned by column, in the order of ``conditions``),
        or a mapping well -> condition. Default :func:`default_layout` ``(conditions)``
        (rows B-C, a column per condition: 10 wells for five conditions).
    fields : int
        Fields per well.
    shape : (Z, Y, X) or (Y, X) sequence of int, optional
        Field shape, overriding ``params.shape``.
    ngff : {"0.5", "0.4"}
        NGFF version of the plate and of the truth label plate.
    params : SynthParams, optional
        Generator parameters (default ``SynthParams()``); ``nuclear_channel`` and
        ``annexin_channel`` add the ``Hoechst`` and ``Annexin V`` channels, the nuclei
        to the truth, and the cells' fates to its tables.
    channels : sequence of str, optional
        Channel labels to write, in order (default all of ``params.channel_labels``:
        ``GFP``, ``MitoTracker Red``, ``Phalloidin``, then ``Hoechst``, ``Annexin V`` when
        drawn): e.g. a plate without actin. The truth is the same.
    conditions : sequence of str, optional
        The conditions laid out one per plate column, cycling (default
        ``PLATE_CONDITIONS``; e.g. ``FATE_CONDITIONS``); names from ``CONDITIONS`` or
        combinations such as ``"ara-C + anti-ICAM-1"``. Not with a ``wells`` mapping.
    overwrite : bool
        Replace an existing plate, plate map and truth.

    Returns
    -------
    Path
        ``out``.
    """
    out = Path(out)
    if out.suffix != ".zarr":
        raise ValueError(f"{out}: the plate path must end in .zarr, e.g. {out.name}.zarr")
    if isinstance(fields, bool) or int(fields) < 1:
        raise ValueError(f"fields={fields!r}: need at least one field per well")
    p = params if params is not None else SynthParams()
    if shape is not None:
        p = SynthParams(**{**p.model_dump(), "shape": tuple(int(s) for s in shape)})
    layout = _layout(wells, conditions)
    drawn = p.channel_labels
    channels = tuple(drawn if channels is None else channels)
    unknown = [c for c in channels if c not in drawn]
    if unknown or not channels or len(set(channels)) != len(channels):
        hint = "" if p.draws_fate else " (Hoechst, Annexin V: set nuclear_channel, annexin_channel)"
        raise ValueError(f"channels {list(channels)}: give distinct labels from {drawn}{hint}")
    pick = [drawn.index(c) for c in channels]
    stem = out.name[: -len(".zarr")]
    truth = out.parent / f"{stem}_truth"
    platemap = out.parent / f"{stem}_platemap.csv"
    targets = (out, truth, platemap)
    if not overwrite:
        for path in targets:
            if path.exists() or path.is_symlink():
                raise FileExistsError(
                    f"{path} exists: choose another --out, or pass --overwrite to replace "
                    f"{stem}.zarr, {stem}_truth and {stem}_platemap.csv"
                )
    elif out.exists() and not ((out / "zarr.json").exists() or (out / ".zgroup").exists()):
        raise FileExistsError(f"{out} exists and is not a zarr store: not overwriting it")
    elif truth.exists() and not (truth.is_dir() and not truth.is_symlink()):
        raise FileExistsError(f"{truth} exists and is not a folder: not overwriting it")
    elif platemap.is_dir():
        raise FileExistsError(f"{platemap} is a folder: not overwriting it")
    try:
        _write(out, truth, platemap, layout, p, seed, int(fields), ngff, channels, pick, stem,
               overwrite)  # fmt: skip
    except BaseException:
        # a refused or interrupted synth leaves nothing half-written behind (each target was
        # absent, or overwrite=True and of the kind this function writes)
        for path in targets:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists() or path.is_symlink():
                path.unlink(missing_ok=True)
        raise
    return out


def _write(out, truth, platemap, layout, p, seed, fields, ngff, channels, pick, stem, overwrite):
    """The writing phase of :func:`write_synth_plate`, its arguments checked."""
    from hcsmito.io.writer import create_plate, write_image, write_labels

    truth.mkdir(parents=True, exist_ok=True)
    create_plate(out, wells=list(layout), fields_per_well=int(fields), version=ngff,
                 overwrite=overwrite)  # fmt: skip
    labels_plate = truth / "labels.zarr"
    create_plate(labels_plate, wells=list(layout), fields_per_well=int(fields), version=ngff,
                 name=f"{stem}_truth", overwrite=True)  # fmt: skip

    axes = "czyx" if p.ndim == 3 else "cyx"
    names = TRUTH_TABLES + (FATE_TABLES if p.draws_fate else ())
    rows_map, tables, summaries, seeds = [], {k: [] for k in names}, [], {}
    replicate: dict[str, int] = {}
    for well, cond in layout.items():
        name = _well_name(well)
        replicate[cond] = replicate.get(cond, 0) + 1
        rows_map.append({"well": name, "condition": cond, "replicate": replicate[cond], "day": 1})
        for fi in range(int(fields)):
            fs = field_seed(seed, well, fi)
            seeds[f"{name}/{fi}"] = fs
            f: SynthField = generate_field(p, condition=cond, seed=fs)
            write_image(out, well, fi, f.image[pick], axes=axes, voxel_size=f.voxel_size,
                        channel_labels=channels,
                        channel_colors=channel_colors(channels))  # fmt: skip
            for lname, lab in f.labels.items():
                write_labels(labels_plate, well, fi, lname, lab, axes=axes[1:],
                             voxel_size=f.voxel_size)  # fmt: skip
            ctx = {"plate": stem, "well": name, "field": fi}
            for k in names:
                tables[k].append(f.tables[k].assign(**ctx))
            summaries.append({**ctx, **f.summary})

    pd.DataFrame(rows_map).to_csv(platemap, index=False)
    for k, parts in tables.items():
        table = pd.concat(parts, ignore_index=True)
        front = ["plate", "well", "field"]
        table[front + [c for c in table.columns if c not in front]].to_parquet(
            truth / f"{k}.parquet", index=False
        )
    pd.DataFrame(summaries).to_parquet(truth / "fields.parquet", index=False)
    meta = {
        "seed": seed,
        "ngff": ngff,
        "channels": list(channels),
        "params": p.model_dump(mode="json"),
        "field_seeds": seeds,
    }
    (truth / "synth.json").write_text(json.dumps(meta, indent=1))


def read_truth(out: str | Path) -> dict[str, pd.DataFrame]:
    """The truth tables written beside plate ``out`` (``msc``, ``jurkat``, ``foci``, ``tnt``,
    ``fields``, and ``nuclei`` when the plate has them), keyed by name.
    """
    out = Path(out)
    truth = out.parent / f"{out.name.removesuffix('.zarr')}_truth"
    if not truth.is_dir():
        raise FileNotFoundError(f"{truth} is absent: write the plate with write_synth_plate")
    names = [*TRUTH_TABLES, "fields"]
    names += [k for k in FATE_TABLES if (truth / f"{k}.parquet").exists()]
    return {k: pd.read_parquet(truth / f"{k}.parquet") for k in names}
