"""What the report says of a readout beside its numbers (:mod:`hcsmito.report`)."""

from __future__ import annotations

__all__ = ["READOUT_NOTES"]

#: What the report says of a readout beside its numbers (the figure caption and a note
#: under the results), for the readouts that are not what their name measures directly.
READOUT_NOTES: dict[str, str] = {
    "pct_jurkat_apoptotic": (
        "Jurkat apoptotic by nuclear morphology is a stain-free proxy: a donor cell counts "
        "as apoptotic when its nucleus is condensed (small against the field's typical "
        "Jurkat nucleus) or fragmented, of the donor cells with a nucleus. It misses "
        "apoptosis before the chromatin condenses and does not replace a marker: where the "
        "plate has annexin V, % annexin V+ Jurkat is the measure."
    ),
}
