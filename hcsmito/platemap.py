"""Plate maps: which condition (treatment, replicate, day) each well holds.

A plate map is a CSV file with one row per well::

    well,condition,replicate,day,drug,inhibitor
    B03,DMSO,1,1,,
    B/4,cytochalasin D,1,1,,cytochalasin D

``well`` and ``condition`` are required; ``replicate`` (the experiment a well belongs
to), ``day`` (time point, a number), ``drug`` and ``inhibitor`` are optional, and any
other column is kept as it is. Wells may be written ``B03``, ``B3`` or ``B/3``; the map
returned always uses ``B/3``, the form of every output table.

Checks (all at once, so that one run reports every problem):

- missing ``well`` / ``condition`` columns, an empty condition, an unreadable well name,
  a well listed twice, a ``replicate`` that is not an integer or a ``day`` that is not a
  number are errors (:class:`PlateMapError`, naming the file, the CSV line and the fix);
- wells in the map that the plate does not have are an error by default (a typo in the
  map would silently drop a condition), or a warning with ``on_extra="warn"``;
- wells in the plate that the map does not list are *not* an error: they are imaged but
  belong to no condition. They are logged as a warning and returned in
  ``plate_map.attrs["wells_not_in_map"]``; aggregation leaves them out of the statistics
  and the report lists them.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from hcsmito.io.names import normalize_well
from hcsmito.io.names import well_sort_key as _row_col

__all__ = ["PlateMapError", "normalize_well", "read_plate_map"]

log = logging.getLogger(__name__)


class PlateMapError(ValueError):
    """The plate map is unusable; the message lists each problem with its line and fix."""


def read_plate_map(
    path: str | Path,
    *,
    plate_wells: Iterable[str] | None = None,
    on_extra: str = "error",
) -> pd.DataFrame:
    """Read and check a plate map CSV.

    Parameters
    ----------
    path : str or Path
        CSV with a header line: ``well, condition`` and optional ``replicate, day, drug,
        inhibitor`` and further columns (kept as text).
    plate_wells : iterable of str, optional
        The wells of the plate (any accepted spelling), to check the map against.
    on_extra : {"error", "warn"}
        What to do with wells in the map that are not in ``plate_wells``: raise, or log a
        warning and keep them (they then have no data).

    Returns
    -------
    DataFrame
        One row per well, sorted by row then column: ``well`` (``B/3``), ``condition``,
        ``replicate`` (int; default: the well's rank within its condition and day),
        ``day`` (float, NaN when absent), ``drug`` and ``inhibitor`` (str, "" when
        absent), then the extra columns. ``attrs["wells_not_in_map"]`` lists plate wells
        the map does not name, ``attrs["wells_not_in_plate"]`` map wells the plate lacks
        (with ``on_extra="warn"``), ``attrs["source"]`` the file.

    Raises
    ------
    PlateMapError
        With every problem found, each naming the file, line and fix.
    FileNotFoundError
        If ``path`` does not exist.
    """
    if on_extra not in ("error", "warn"):
        raise ValueError(f"on_extra={on_extra!r}: use 'error' or 'warn'")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"plate map {path} does not exist: give the CSV with --plate-map")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.reader(fh))
    # (line number, cells) of the non-blank lines; line numbers as an editor shows them
    lines = [(i + 1, r) for i, r in enumerate(rows) if any(c.strip() for c in r)]
    if not lines:
        raise PlateMapError(f"plate map {path} is empty: write a header 'well,condition'")
    header_line, header = lines[0]
    header = [h.strip().lower() for h in header]
    problems: list[str] = []
    for need in ("well", "condition"):
        if need not in header:
            problems.append(
                f"line {header_line}: no '{need}' column (header is {','.join(header)}): "
                "the first line must name the columns, e.g. 'well,condition,replicate,day'"
            )
    dup_cols = sorted({h for h in header if header.count(h) > 1})
    if dup_cols:
        problems.append(f"line {header_line}: columns named twice: {', '.join(dup_cols)}")
    if problems:
        raise PlateMapError(_message(path, problems))

    records, seen = [], {}
    for lineno, cells in lines[1:]:
        if len(cells) > len(header) and any(c.strip() for c in cells[len(header) :]):
            problems.append(
                f"line {lineno}: {len(cells)} values for {len(header)} columns: "
                "quote values that contain commas"
            )
            continue
        rec = {h: (cells[i].strip() if i < len(cells) else "") for i, h in enumerate(header)}
        try:
            well = normalize_well(rec["well"])
        except ValueError:
            problems.append(
                f"line {lineno}: well {rec['well']!r} is not understood: write it as 'B03', "
                "'B3' or 'B/3'"
            )
            continue
        if well in seen:
            problems.append(
                f"line {lineno}: well {well} is already listed on line {seen[well]}: "
                "give each well one row"
            )
            continue
        seen[well] = lineno
        if not rec["condition"]:
            problems.append(f"line {lineno}: well {well} has no condition: fill it in")
        for col, kind in (("replicate", int), ("day", float)):
            raw = rec.get(col, "")
            if raw:
                try:
                    val = float(raw)
                    if kind is int and val != int(val):
                        raise ValueError
                except ValueError:
                    what = "an integer" if kind is int else "a number"
                    problems.append(
                        f"line {lineno}: {col} {raw!r} of well {well} is not {what}: "
                        f"write e.g. {col}=1"
                    )
        rec["well"] = well
        rec["_line"] = lineno
        records.append(rec)
    if not records and not problems:
        problems.append(f"line {header_line}: no wells after the header: add one row per well")
    if problems:
        raise PlateMapError(_message(path, problems))

    df = pd.DataFrame.from_records(records)
    for col in ("drug", "inhibitor"):
        if col not in df:
            df[col] = ""
    df["day"] = pd.to_numeric(df["day"], errors="coerce") if "day" in df else np.nan
    df["day"] = df["day"].astype("float64")
    if "replicate" in df and (df["replicate"] != "").all():
        df["replicate"] = pd.to_numeric(df["replicate"]).astype("int64")
    else:
        if "replicate" in df and (df["replicate"] != "").any():
            blank = df.loc[df["replicate"] == "", "_line"].tolist()
            raise PlateMapError(
                _message(path, [f"lines {blank}: replicate is blank: fill in every row or none"])
            )
        # each well its own replicate, numbered within condition (and day)
        keys = ["condition"] + (["day"] if df["day"].notna().any() else [])
        df["replicate"] = df.groupby(keys, dropna=False).cumcount().astype("int64") + 1

    wells_plate = None if plate_wells is None else {normalize_well(w) for w in plate_wells}
    not_in_map: list[str] = []
    not_in_plate: list[str] = []
    if wells_plate is not None:
        mapped = set(df["well"])
        not_in_map = sorted(wells_plate - mapped, key=_row_col)
        not_in_plate = sorted(mapped - wells_plate, key=_row_col)
        if not_in_plate:
            where = [f"{w} (line {seen[w]})" for w in not_in_plate]
            msg = (
                f"wells not in the plate: {', '.join(where)}: remove these rows or check "
                "that the map belongs to this plate"
            )
            if on_extra == "error":
                raise PlateMapError(_message(path, [msg]))
            log.warning("plate map %s: %s", path, msg)
        if not_in_map:
            log.warning(
                "plate map %s does not list %d plate well(s): %s; they are left out of the "
                "statistics (add rows to assign them a condition)",
                path,
                len(not_in_map),
                ", ".join(not_in_map),
            )

    front = ["well", "condition", "replicate", "day", "drug", "inhibitor"]
    extra = [c for c in df.columns if c not in front and c != "_line"]
    df = df[front + extra]
    df = df.iloc[sorted(range(len(df)), key=lambda i: _row_col(df["well"].iloc[i]))]
    df = df.reset_index(drop=True)
    df.attrs["source"] = str(path)
    df.attrs["wells_not_in_map"] = not_in_map
    df.attrs["wells_not_in_plate"] = not_in_plate
    return df


def _message(path: Path, problems: list[str]) -> str:
    head = f"plate map {path}: {len(problems)} problem(s):"
    return "\n".join([head, *(f"  {p}" for p in problems)])
