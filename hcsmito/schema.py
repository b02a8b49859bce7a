"""The one declaration of channel roles and output tables.

Every other part reads it: the config (``channels``, ``optics.emission_um``, the roles a
deconvolution may name), channel resolution (default label patterns), the label writer
(display colours), the pipeline (which detection images are background-subtracted, which
tables a field returns), the runner (part files, compaction, sort keys, which channels
go to ``labels.zarr``) and the aggregation (which tables it reads). Adding a role or a
table here is the whole declaration; a stage that fills the table is the only other edit.

>>> [r.name for r in ROLES]
['msc', 'mito', 'actin', 'nuclei', 'annexin', 'pi']
>>> list(TABLES["foci"].dtypes)[:3]
['focus_id', 'cell_id', 'z_um']

This module imports nothing of hcsmito (every module may read it). The config reads the
roles when it is imported; every other reader reads the declaration when it is called.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

__all__ = [
    "KEY_COLUMNS",
    "MARKER_COLUMNS",
    "ROLES",
    "Column",
    "Role",
    "Table",
    "TABLES",
    "aggregate_tables",
    "column_units",
    "conform",
    "empty_table",
    "field_tables",
    "marker_columns",
    "marker_key",
    "marker_names",
    "marker_problem",
    "markers_in",
    "role",
    "role_names",
]


# --------------------------------------------------------------------------- roles


@dataclass(frozen=True)
class Role:
    """A channel role of the assay.

    Attributes
    ----------
    name : str
        The role's key (``channels.<name>`` in the config).
    pattern : str
        Case-insensitive regular expression found in the channel label when the config
        leaves the role unset; alternatives (``a|b``) also pick the display colour.
    emission_um : float
        Emission wavelength, µm (theoretical PSF).
    color : str
        Display colour ``RRGGBB`` of a channel whose label matches ``pattern``.
    background : bool
        The detection image is background-subtracted (``background.method``).
    to_labels : bool
        The channel is written to ``labels.zarr`` beside the label images.
    required : bool
        A field without this role cannot be processed.
    marker : bool
        A per-cell marker (annexin V, PI...): each MSC and donor cell gets its mean and
        integrated intensity on the raw channel and a positive call.
    doc : str
        What the channel shows.
    """

    name: str
    pattern: str
    emission_um: float
    color: str
    background: bool = False
    to_labels: bool = True
    required: bool = False
    marker: bool = False
    doc: str = ""


#: The channel roles, in the order of the config and of the ``labels.zarr`` channels.
# fmt: off
ROLES: tuple[Role, ...] = (
    Role("msc", "gfp", 0.51, "00FF00", background=True, doc="GFP: the receiving MSCs"),
    Role("mito", "mito", 0.60, "FF0000", background=True, required=True,
         doc="MitoTracker: the donor cells' mitochondria"),
    Role("actin", "phalloidin|actin", 0.67, "FFFFFF", doc="phalloidin: TNTs"),
    Role("nuclei", "hoechst|dapi|nuclei|nuclear", 0.46, "0000FF",
         doc="Hoechst / DAPI: nuclei, which seed the cells"),
    Role("annexin", "annexin", 0.67, "FFFF00", marker=True,
         doc="annexin V: apoptotic cells' membranes (per-cell marker)"),
    Role("pi", r"\bpi\b|propidium", 0.62, "FF8000", marker=True,
         doc="propidium iodide: dead cells' nuclei (per-cell marker)"),
)
# fmt: on


def role_names() -> tuple[str, ...]:
    """The declared role names, in order."""
    return tuple(r.name for r in ROLES)


def marker_names() -> tuple[str, ...]:
    """The roles that are per-cell markers, in order (the built-in markers: a config may
    name more, ``markers.channels``)."""
    return tuple(r.name for r in ROLES if r.marker)


def role(name: str) -> Role:
    """The declared role ``name``."""
    for r in ROLES:
        if r.name == name:
            return r
    raise KeyError(f"unknown channel role {name!r}: the roles are {list(role_names())}")


# --------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class Column:
    """One column: pandas dtype and unit (``""`` for counts, ids, flags and text)."""

    name: str
    dtype: str
    unit: str = ""


@dataclass(frozen=True)
class Table:
    """An output table of ``OUT/tables``.

    Attributes
    ----------
    name : str
        ``OUT/tables/<name>.parquet``.
    columns : tuple of Column
        The minimum columns, in order (per-field tables: after :data:`KEY_COLUMNS`).
    id_column : str or None
        The object id (sort key after well and field); None for one row per field.
    per : {"field", "aggregate"}
        ``field``: each field's task writes its rows (a part file), compacted at the end
        of a run; ``aggregate``: computed from the field tables by the aggregation.
    doc : str
        One row per what.
    """

    name: str
    columns: tuple[Column, ...]
    id_column: str | None = None
    per: str = "field"
    doc: str = ""

    @property
    def dtypes(self) -> dict[str, str]:
        """Column name -> pandas dtype."""
        return {c.name: c.dtype for c in self.columns}

    @property
    def units(self) -> dict[str, str]:
        """Column name -> unit."""
        return {c.name: c.unit for c in self.columns}


def _cols(*spec: tuple[str, ...]) -> tuple[Column, ...]:
    return tuple(Column(*s) for s in spec)


UM, UM2, UM3 = "µm", "µm²", "µm³"

#: The columns that lead every per-field table's rows (added by the runner).
KEY_COLUMNS: tuple[Column, ...] = _cols(("plate", "object"), ("well", "object"), ("field", "int32"))

# fmt: off
_TABLE_LIST: tuple[Table, ...] = (
    Table("foci", _cols(
        ("focus_id", "int32"), ("cell_id", "int32"),
        ("z_um", "float64", UM), ("y_um", "float64", UM), ("x_um", "float64", UM),
        ("volume_um3", "float64", UM3), ("area_um2", "float64", UM2),
        ("n_voxels", "int64"),
        ("intensity_sum", "float64"), ("intensity_mean", "float64"),
        ("intensity_max", "float64"),
        ("equivalent_diameter_um", "float64", UM),
        ("axis_major_length_um", "float64", UM), ("axis_minor_length_um", "float64", UM),
        ("parent_overlap", "float64"),
    ), id_column="focus_id", doc="focus (internalized mitochondrial fragment)"),
    Table("cells", _cols(
        ("cell_id", "int32"), ("volume_um3", "float64", UM3),
        ("y_um", "float64", UM), ("x_um", "float64", UM),
        ("touches_border", "bool"), ("n_foci", "int64"),
        ("foci_volume_um3", "float64", UM3), ("foci_area_um2", "float64", UM2),
        ("foci_intensity_sum", "float64"), ("red_positive", "bool"),
        ("n_adhered_jurkat", "int64"),
    ), id_column="cell_id", doc="MSC"),
    Table("jurkat", _cols(
        ("jurkat_id", "int32"),
        ("z_um", "float64", UM), ("y_um", "float64", UM), ("x_um", "float64", UM),
        ("volume_um3", "float64", UM3), ("adhered", "bool"), ("msc_id", "int32"),
        ("contact_area_um2", "float64", UM2),
    ), id_column="jurkat_id", doc="donor cell"),
    Table("tnt", _cols(
        ("tnt_id", "int32"), ("length_um", "float64", UM),
        ("from_id", "int32"), ("to_id", "int32"), ("carries_mito", "boolean"),
        ("from_kind", "string"), ("to_kind", "string"),
        ("thickness_um", "float64", UM), ("height_um", "float64", UM),
    ), id_column="tnt_id", doc="nanotube"),
    Table("nuclei", _cols(
        ("nucleus_id", "int32"), ("cell_kind", "string"), ("cell_id", "int32"),
        ("z_um", "float64", UM), ("y_um", "float64", UM), ("x_um", "float64", UM),
        ("volume_um3", "float64", UM3), ("equivalent_diameter_um", "float64", UM),
        ("intensity_mean", "float64"), ("intensity_sum", "float64"),
        ("n_parts", "int64"), ("volume_ratio", "float64"), ("intensity_ratio", "float64"),
        ("diameter_to_cell", "float64"),
        ("state", "string"), ("apoptotic", "bool"),
    ), id_column="nucleus_id", doc="nucleus (with a nuclear channel)"),
    # counts are nullable: a failed field's row holds <NA>, not 0
    Table("fields", _cols(
        ("n_msc", "Int64"), ("n_msc_red_positive", "Int64"),
        ("pct_msc_red_positive", "float64", "%"),
        ("n_foci", "Int64"), ("foci_volume_um3", "float64", UM3),
        ("foci_area_um2", "float64", UM2),
        ("n_jurkat", "Int64"), ("n_jurkat_adhered", "Int64"),
        ("n_tnt", "Int64"), ("n_tnt_with_mito", "Int64"),
        ("status", "string"),
        # QC codes of hcsmito.qc.QC_FLAGS joined by "," ("" none; a failed field <NA>)
        ("qc_flags", "string"),
        ("glass_z_um", "float64", UM), ("glass_source", "string"),
    ), doc="field"),
    # the aggregates' columns depend on the readouts; the fixed ones are declared
    Table("wells", _cols(("plate", "string"), ("well", "string")), per="aggregate",
          doc="well"),
    Table("conditions", _cols(
        ("condition", "string"), ("day", "float64"), ("readout", "string"),
        ("label", "string"), ("n", "int64"), ("mean", "float64"), ("sd", "float64"),
        ("sem", "float64"), ("diff", "float64"), ("ratio", "float64"), ("t", "float64"),
        ("df", "float64"), ("p_welch", "float64"), ("p_welch_holm", "float64"),
        ("p_posthoc", "float64"), ("stars", "string"), ("stars_posthoc", "string"),
        ("f_anova", "float64"), ("p_anova", "float64"), ("stars_anova", "string"),
    ), per="aggregate", doc="condition, day and readout"),
    Table("replicates", _cols(("sample", "string"), ("readout", "string"),
                              ("value", "float64")), per="aggregate",
          doc="statistical unit and readout"),
    Table("trends", _cols(
        ("condition", "string"), ("readout", "string"), ("slope_per_day", "float64"),
        ("intercept", "float64"), ("r", "float64"), ("p", "float64"),
        ("stderr", "float64"), ("n", "int64"), ("stars", "string"),
    ), per="aggregate", doc="condition and readout over days"),
)
# fmt: on

#: Every output table by name.
TABLES: dict[str, Table] = {t.name: t for t in _TABLE_LIST}


def field_tables() -> tuple[str, ...]:
    """The per-field tables, in order: each field's task writes them (part files), the
    runner compacts them, the aggregation reads them."""
    return tuple(t.name for t in TABLES.values() if t.per == "field")


def aggregate_tables() -> tuple[str, ...]:
    """The tables the aggregation computes from the per-field ones."""
    return tuple(t.name for t in TABLES.values() if t.per == "aggregate")


# --------------------------------------------------------------------------- markers

# fmt: off
#: The columns each per-cell marker adds to a table, ``{m}`` standing for its name (a role
#: declared ``marker``, or a marker the config names in ``markers.channels``): mean and
#: integrated intensity on the raw channel, the contrast the call reads
#: (:mod:`hcsmito.stages.markers`) and the call; per field the counts of positive cells,
#: the threshold and the channel's background level.
MARKER_COLUMNS: dict[str, tuple[Column, ...]] = {
    **{name: _cols(("{m}_mean", "float64"), ("{m}_sum", "float64"),
                   ("{m}_contrast", "float64"), ("{m}_positive", "bool"))
       for name in ("cells", "jurkat")},
    "fields": _cols(("n_jurkat_{m}_positive", "Int64"), ("n_msc_{m}_positive", "Int64"),
                    ("{m}_threshold", "float64"), ("{m}_background", "float64")),
}
# fmt: on

#: What a marker's name must be once made safe (:func:`marker_key`): it becomes part of
#: column names.
_MARKER_NAME = re.compile(r"[a-z][a-z0-9_]*")


def marker_columns(name: str, marker: str) -> tuple[Column, ...]:
    """The columns that ``marker`` adds to table ``name`` (none for other tables).

    >>> [c.name for c in marker_columns("fields", "casp3")][:2]
    ['n_jurkat_casp3_positive', 'n_msc_casp3_positive']
    """
    return tuple(
        Column(c.name.format(m=marker), c.dtype, c.unit) for c in MARKER_COLUMNS.get(name, ())
    )


def marker_key(name: str) -> str:
    """A marker's name as its columns carry it: lowercase, each run of other characters
    than letters and digits one ``_``, none at the ends.

    >>> marker_key("SYTOX Green"), marker_key("Casp-3/7")
    ('sytox_green', 'casp_3_7')
    """
    return re.sub(r"[^a-z0-9]+", "_", str(name).lower()).strip("_")


def marker_problem(name: str) -> str | None:
    """Why ``name`` (made safe by :func:`marker_key`) cannot name a marker the config adds,
    or None: not a safe name, a built-in role's name, or a name whose columns would be
    columns the tables already declare (``red``: ``n_msc_red_positive``)."""
    if not _MARKER_NAME.fullmatch(name):
        return "a marker name needs a letter first, then letters, digits or '_'"
    if name in role_names():
        kind = "marker" if role(name).marker else "channel role"
        return (
            f"{name!r} is a built-in {kind}: name its channel in `channels.{name}`, or "
            "give the marker another name"
        )
    key = {c.name for c in KEY_COLUMNS}
    for table in MARKER_COLUMNS:
        taken = key | set(TABLES[table].dtypes)
        clash = [c.name for c in marker_columns(table, name) if c.name in taken]
        if clash:
            return f"its column {clash[0]!r} is a column of the {table} table: rename the marker"
    return None


def markers_in(columns: Iterable[str], table: str = "fields") -> tuple[str, ...]:
    """The markers whose every column of ``table`` is among ``columns`` (a table's
    columns): the built-in markers first, then the others as the columns come.

    >>> markers_in(["n_msc", "n_jurkat_casp3_positive", "n_msc_casp3_positive",
    ...             "casp3_threshold", "casp3_background"])
    ('casp3',)
    """
    cols = list(columns)
    have = set(cols)
    first = MARKER_COLUMNS[table][0].name
    pattern = re.compile(re.escape(first).replace(re.escape("{m}"), "([a-z][a-z0-9_]*)"))
    found = [m.group(1) for c in cols if (m := pattern.fullmatch(c))]
    found = [m for m in found if {c.name for c in marker_columns(table, m)} <= have]
    builtin = [m for m in marker_names() if m in found]
    return tuple(builtin + [m for m in dict.fromkeys(found) if m not in builtin])


def empty_table(name: str, *, keys: bool = False) -> pd.DataFrame:
    """A table with zero rows and the declared columns of ``name`` (with
    :data:`KEY_COLUMNS` first when ``keys``)."""
    cols = (KEY_COLUMNS if keys else ()) + TABLES[name].columns
    return pd.DataFrame({c.name: pd.Series(dtype=c.dtype) for c in cols})


def column_units(name: str, columns: Iterable[str]) -> dict[str, str]:
    """The unit of each of ``columns`` of table ``name`` that has one (its Parquet field
    metadata ``unit``): the declared columns' units; in ``wells``, a per-field readout
    and its SEM over fields (``<col>_sem``) take the unit of ``fields``' column ``<col>``.

    >>> column_units("wells", ["well", "foci_area_um2", "foci_area_um2_sem", "n_msc"])
    {'foci_area_um2': 'µm²', 'foci_area_um2_sem': 'µm²'}
    """
    declared = (TABLES[name].units if name in TABLES else {}) | {c.name: "" for c in KEY_COLUMNS}
    per_field = TABLES["fields"].units if name == "wells" else {}
    out = {}
    for col in columns:
        unit = declared.get(col) or per_field.get(col.removesuffix("_sem"), "")
        if unit:
            out[col] = unit
    return out


def conform(name: str, df: pd.DataFrame) -> pd.DataFrame:
    """``df`` as table ``name`` is written: when it has no rows, its declared columns
    (and :data:`KEY_COLUMNS`, and the columns of the markers it has:
    :data:`MARKER_COLUMNS`) take their declared dtypes, so that an empty table's Parquet
    schema still types every column (not ``null``, nor text for numbers)."""
    if len(df) or name not in TABLES:
        return df
    cols = KEY_COLUMNS + TABLES[name].columns
    if name in MARKER_COLUMNS:
        for m in markers_in(df.columns, name):
            cols += marker_columns(name, m)
    # an empty object column would be Arrow's null type: text columns are strings
    return df.astype(
        {c.name: "string" if c.dtype == "object" else c.dtype for c in cols if c.name in df}
    )
