"""Plate maps: which condition (treatment, replicate, day) each well holds.

A plate map is a CSV file with one row per well::

    well,condition,replicate,day,drug,inhibitor
    B03,DMSO,1,1,,
    B/4,cytochalasin D,1,1,,cytochalasin D

The file may be separated by commas, semicolons or tabs (found from the header line) and
encoded in UTF-8 (with or without a byte-order mark), UTF-16 with a byte-order mark, or
Latin-1 (the fallback, as spreadsheet programs write it). Values are kept verbatim
(stripped of surrounding blanks): condition names with ``$``, ``_``, ``<`` or ``&`` come back
as written; escaping them for mathtext / HTML is the report's job.

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

A message lists at most :data:`MAX_PROBLEMS` problems, then how many more there are.
:func:`validate_plate_map` is the check to run before any field is processed.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from hcsmito.io.names import normalize_well
from hcsmito.io.names import well_sort_key as _row_col

__all__ = [
    "MAX_PROBLEMS",
    "PlateMapError",
    "normalize_well",
    "read_plate_map",
    "validate_plate_map",
]

log = logging.getLogger(__name__)

MAX_PROBLEMS = 20  # problems listed in one message; the rest are counted
_DELIMITERS = (",", ";", "\t")


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
    rows = _read_rows(path)
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
    wells_plate = None if plate_wells is None else {normalize_well(w) for w in plate_wells}
    if wells_plate is not None and on_extra == "error":
        extra = sorted(set(seen) - wells_plate, key=_row_col)
        for w in extra:
            problems.append(
                f"line {seen[w]}: well {w} is not in the plate: remove the row or check that "
                "the map belongs to this plate"
            )
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


def validate_plate_map(path: str | Path, wells_in_plate: Iterable[str]) -> pd.DataFrame:
    """Check a plate map against the plate before any field is processed, and parse it.

    Every check of :func:`read_plate_map` (columns, well names, duplicates, replicate and
    day values, an empty map) plus: the file exists, is a readable text file, and names no
    well the plate lacks. All problems are reported at once (at most :data:`MAX_PROBLEMS`,
    then how many more).

    Parameters
    ----------
    path : str or Path
        The plate map CSV (comma, semicolon or tab separated; UTF-8, UTF-16 or Latin-1).
    wells_in_plate : iterable of str
        The plate's wells, in any accepted spelling (e.g. ``Plate.wells``).

    Returns
    -------
    DataFrame
        As :func:`read_plate_map`; condition names are returned verbatim.

    Raises
    ------
    PlateMapError
        Naming the file and each problem with its line and fix.
    """
    path = Path(path)
    if not path.exists():
        raise PlateMapError(
            f"plate map {path} does not exist: give the path of the CSV with --plate-map"
        )
    if not path.is_file():
        raise PlateMapError(f"plate map {path} is not a file: give the path of the CSV")
    return read_plate_map(path, plate_wells=list(wells_in_plate), on_extra="error")


def _read_rows(path: Path) -> list[list[str]]:
    """The CSV's rows, decoded (UTF-8 / UTF-16 with BOM / Latin-1) and split on the delimiter
    the header line uses (comma, semicolon or tab)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PlateMapError(
            f"plate map {path} cannot be read ({exc.strerror or exc}): check the path and "
            "its permissions"
        ) from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = raw.decode("utf-16")
    elif b"\x00" in raw:
        raise PlateMapError(
            f"plate map {path} is not a text file (it holds NUL bytes): give a CSV with "
            "columns well,condition, saved as UTF-8"
        )
    else:
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")  # never fails: every byte is a character
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    counts = {d: first.count(d) for d in _DELIMITERS}
    delimiter = max(_DELIMITERS, key=lambda d: counts[d]) if any(counts.values()) else ","
    try:
        return list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    except csv.Error as exc:
        raise PlateMapError(f"plate map {path} is not a readable CSV: {exc}") from None


def _message(path: Path, problems: list[str]) -> str:
    shown = problems[:MAX_PROBLEMS]
    more = len(problems) - len(shown)
    head = f"plate map {path}: {len(problems)} problem(s):"
    tail = [f"  and {more} more"] if more else []
    return "\n".join([head, *(f"  {p}" for p in shown), *tail])
