"""The readouts of the assay and the levels a replicate can be (:mod:`hcsmito.aggregate`)."""

from __future__ import annotations

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
        Readout(
            "pct_jurkat_apoptotic",
            "Jurkat apoptotic by nuclear morphology, a stain-free proxy (%)",
            "n_jurkat_apoptotic",
            "n_jurkat_with_nucleus",
            100.0,
            optional=True,
        ),  # fmt: skip
        *(
            Readout(
                f"pct_{kind}_{m}_positive",
                f"{who} {schema.role(m).doc.split(':')[0]}+ (%)",
                f"n_{kind}_{m}_positive",
                f"n_{kind}",
                100.0,
                optional=True,
            )
            for m in schema.marker_names()
            for kind, who in (("jurkat", "Jurkat"), ("msc", "MSC"))
        ),  # fmt: skip
    )
}

#: The per-field counts summed per well (those of a channel a plate lacks are absent).
COUNTS = ("n_msc", "n_msc_red_positive", "n_foci", "n_jurkat", "n_jurkat_adhered",
          "n_jurkat_apoptotic", "n_jurkat_with_nucleus",
          *(f"n_{kind}_{m}_positive" for m in schema.marker_names()
            for kind in ("jurkat", "msc")))  # fmt: skip
#: The columns that name a field in every table.
KEY = ["plate", "well", "field"]
