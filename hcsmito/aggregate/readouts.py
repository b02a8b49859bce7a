"""The readouts of the assay and the levels a replicate can be (:mod:`hcsmito.aggregate`)."""

from __future__ import annotations

from dataclasses import dataclass

UNITS = ("field", "well", "experiment")


@dataclass(frozen=True)
class Readout:
    """One readout: a per-field ratio ``scale * num / den`` or a per-field quantity ``num``."""

    name: str
    label: str
    num: str
    den: str | None = None
    scale: float = 1.0

    @property
    def is_ratio(self) -> bool:
        return self.den is not None


#: The readouts of the assay, in report order.
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
    )
}

#: The per-field counts summed per well.
COUNTS = ("n_msc", "n_msc_red_positive", "n_foci", "n_jurkat", "n_jurkat_adhered")
#: The columns that name a field in every table.
KEY = ["plate", "well", "field"]
