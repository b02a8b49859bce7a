"""The readouts of the assay and the levels a replicate can be (:mod:`hcsmito.aggregate`)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from hcsmito import schema

UNITS = ("field", "well", "experiment")


@dataclass(frozen=True)
class Readout:
    """One readout: a per-field ratio ``scale * num / den`` or a per-field quantity ``num``.

    ``optional``: the readout of a channel a plate may lack (nuclei, markers); the
    statistics leave it out, without a word, where the fields table lacks its columns.
    """

    name: str
    label: str
    num: str
    den: str | None = None
    scale: float = 1.0
    optional: bool = False

    @property
    def is_ratio(self) -> bool:
        return self.den is not None


_WHO = (("jurkat", "Jurkat"), ("msc", "MSC"))
_MARKER_READOUT = re.compile(r"pct_(jurkat|msc)_([a-z][a-z0-9_]*)_positive")


def marker_readouts(marker: str) -> tuple[Readout, ...]:
    """The readouts of a per-cell marker: % marker+ donor cells and % marker+ MSCs (a
    built-in marker labelled by its role's doc, another by its name)."""
    name = schema.role(marker).doc.split(":")[0] if marker in schema.marker_names() else marker
    return tuple(
        Readout(f"pct_{kind}_{marker}_positive", f"{who} {name}+ (%)",
                f"n_{kind}_{marker}_positive", f"n_{kind}", 100.0, optional=True)
        for kind, who in _WHO
    )  # fmt: skip


def marker_counts(marker: str) -> tuple[str, ...]:
    """The per-field counts of a marker summed per well."""
    return tuple(f"n_{kind}_{marker}_positive" for kind, _ in _WHO)


#: The readouts of the assay, in report order: the built-in markers' (annexin V, PI);
#: a marker the config adds has its readouts where its columns are (:func:`readouts_for`).
READOUTS: dict[str, Readout] = {
    r.name: r
    for r in (
        Readout("pct_msc_red_positive", "MSC Red+ (%)", "n_msc_red_positive", "n_msc", 100.0),
        Readout("foci_area_um2", "Red foci area per field (µm²)", "foci_area_um2"),
        Readout("foci_volume_um3", "Red foci volume per field (µm³)", "foci_volume_um3"),
        Readout("foci_per_msc", "Red foci per MSC", "n_foci", "n_msc"),
        Readout(
            "pct_jurkat_adhered",
            "Jurkat adhered to MSCs (%)",
            "n_jurkat_adhered",
            "n_jurkat",
            100.0,
        ),  # fmt: skip
        Readout("n_tnt", "TNTs per field", "n_tnt"),
        Readout("n_tnt_with_mito", "TNTs carrying mitochondria per field", "n_tnt_with_mito"),
        Readout(
            "pct_jurkat_apoptotic",
            "Jurkat apoptotic by nuclear morphology, a stain-free proxy (%)",
            "n_jurkat_apoptotic",
            "n_jurkat_with_nucleus",
            100.0,
            optional=True,
        ),  # fmt: skip
        *(r for m in schema.marker_names() for r in marker_readouts(m)),
    )
}

#: The per-field counts summed per well (those of a channel a plate lacks are absent).
COUNTS = ("n_msc", "n_msc_red_positive", "n_foci", "n_jurkat", "n_jurkat_adhered",
          "n_jurkat_apoptotic", "n_jurkat_with_nucleus",
          *(c for m in schema.marker_names() for c in marker_counts(m)))  # fmt: skip
#: The columns that name a field in every table.
KEY = ["plate", "well", "field"]


def readouts_for(columns: Iterable[str]) -> dict[str, Readout]:
    """:data:`READOUTS` and the readouts of every other marker whose columns a fields
    table has (``columns``: :func:`hcsmito.schema.markers_in`), in report order."""
    extra = [m for m in schema.markers_in(columns) if m not in schema.marker_names()]
    return {**READOUTS, **{r.name: r for m in extra for r in marker_readouts(m)}}


def counts_for(columns: Iterable[str]) -> tuple[str, ...]:
    """:data:`COUNTS` and the counts of every other marker whose columns a fields table has."""
    extra = [m for m in schema.markers_in(columns) if m not in schema.marker_names()]
    return (*COUNTS, *(c for m in extra for c in marker_counts(m)))


def find_readout(name: str) -> Readout | None:
    """The readout ``name``: one of :data:`READOUTS`, or a marker's
    (``pct_{jurkat,msc}_<marker>_positive``); None for another name."""
    if name in READOUTS:
        return READOUTS[name]
    m = _MARKER_READOUT.fullmatch(name)
    if m is None:
        return None
    return next(r for r in marker_readouts(m.group(2)) if r.name == name)


def readout_label(name: str) -> str:
    """The label of readout ``name`` (the name itself for an unknown one)."""
    r = find_readout(name)
    return r.label if r is not None else name
