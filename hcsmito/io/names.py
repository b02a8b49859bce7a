"""Names of rows, columns, wells and fields: the NGFF alphanumeric rule and well-name parsing.

Every name that becomes part of a path inside a plate is checked here *before* the
filesystem is touched: the NGFF HCS specification allows only ASCII letters and digits in
row, column and field (image) names, and a well path is exactly ``ROW/COLUMN``. This rules
out ``..``, absolute paths, backslashes and any other separator.
"""

from __future__ import annotations

import re

from hcsmito.io.errors import PlateError

__all__ = [
    "check_name",
    "check_well_path",
    "canonical_well",
    "normalize_well",
    "parse_well",
    "row_sort_key",
    "well_path",
    "well_sort_key",
]

_ALNUM = re.compile(r"^[A-Za-z0-9]+$")
# Well names as users type them: "B/3", "B/03", "B03", "B3", "b03".
_WELL = re.compile(r"^\s*([A-Za-z]{1,2})\s*/?\s*([0-9]{1,3})\s*$")


def check_name(name: object, what: str, *, where: str = "") -> str:
    """Return ``name`` if it is a non-empty ASCII alphanumeric string, else raise.

    Parameters
    ----------
    name : object
        The candidate name (a row, column or field/image name).
    what : str
        What the name is, for the message (``"row name"``, ``"field path"``...).
    where : str, optional
        The plate or node the name comes from, for the message.

    Raises
    ------
    PlateError
        If ``name`` is not a string of letters and digits only.
    """
    if not isinstance(name, str) or not _ALNUM.match(name):
        at = f"{where}: " if where else ""
        raise PlateError(
            f"{at}{what} {name!r} breaks the NGFF naming rule: names must contain only ASCII "
            "letters and digits (no '/', '\\', '..', spaces or absolute paths). Rename it."
        )
    return name


def check_well_path(path: object, *, where: str = "") -> tuple[str, str]:
    """Split a well path ``ROW/COLUMN`` into its two names, checking both.

    Raises
    ------
    PlateError
        If ``path`` is not two alphanumeric names joined by a single ``/``.
    """
    if not isinstance(path, str) or path.count("/") != 1:
        at = f"{where}: " if where else ""
        raise PlateError(
            f"{at}well path {path!r} breaks the NGFF rule: a well path is 'ROW/COLUMN', two "
            "alphanumeric names joined by one '/' (e.g. 'B/03')."
        )
    row, col = path.split("/")
    check_name(row, "row name", where=where)
    check_name(col, "column name", where=where)
    return row, col


def parse_well(name: str) -> tuple[str, int]:
    """Parse a standard well name into ``(row letters, column number)``.

    Accepts ``"B/3"``, ``"B/03"``, ``"B03"``, ``"B3"`` and lower-case rows.

    Raises
    ------
    PlateError
        If ``name`` is not a row of one or two letters followed by a column number.
    """
    m = _WELL.match(name) if isinstance(name, str) else None
    if m is None:
        raise PlateError(
            f"well name {name!r} is not understood: write it as 'B03', 'B3' or 'B/3' "
            "(row letters, then the column number)."
        )
    return m.group(1).upper(), int(m.group(2))


#: Standard plate formats (rows, columns), smallest first: 6 to 1536 wells.
PLATE_FORMATS = ((2, 3), (3, 4), (4, 6), (6, 8), (8, 12), (16, 24), (32, 48))


def _row_name(i: int) -> str:
    """Row letters of the 1-based row ``i`` (1 -> A, 27 -> AA)."""
    name = ""
    while i:
        i, r = divmod(i - 1, 26)
        name = chr(65 + r) + name
    return name


def plate_well(name: str) -> str:
    """The ``B/3`` form of a well that exists on a standard plate (:data:`PLATE_FORMATS`:
    the largest, 1536 wells, has rows A-AF and columns 1-48; a 384-well plate A-P, 1-24).

    Raises
    ------
    PlateError
        If ``name`` is not a well name, or lies off every standard plate.
    """
    row, col = parse_well(name)
    index = 0
    for ch in row:
        index = index * 26 + ord(ch) - 64
    formats = ", ".join(
        f"{r * c} wells: rows A-{_row_name(r)}, columns 1-{c}" for r, c in PLATE_FORMATS[-3:]
    )
    nr, nc = PLATE_FORMATS[-1]
    if not (1 <= index <= nr and 1 <= col <= nc):
        raise PlateError(f"well {name!r} is on no standard plate ({formats})")
    return f"{row}/{col}"


def normalize_well(name: str) -> str:
    """The ``B/3`` form (as in every table) of a well written ``B03``, ``B3``, ``B/3``, ``b/03``."""
    row, col = parse_well(name)
    return f"{row}/{col}"


def well_sort_key(well: str) -> tuple[int, str, int]:
    """Plate order of a ``B/3``-form well: rows ``A < ... < Z < AA``, then column number."""
    row, col = well.split("/")
    return (*row_sort_key(row), int(col))


def canonical_well(row: str, col: str) -> str:
    """The ``B/3`` form used in every table: row, ``/``, column without leading zeros."""
    return f"{row}/{int(col)}" if col.isdigit() else f"{row}/{col}"


def well_path(name: str, *, pad: int = 2) -> str:
    """The on-disk path written for a well name: ``"B3"`` -> ``"B/03"``.

    The column number is zero-padded to ``pad`` digits so that paths sort naturally.
    """
    row, col = parse_well(name)
    return f"{row}/{col:0{pad}d}"


def row_sort_key(row: str) -> tuple[int, str]:
    """Sort rows as plates do: ``A < B < ... < Z < AA < AB``."""
    return (len(row), row)
