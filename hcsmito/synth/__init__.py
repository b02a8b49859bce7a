"""Synthetic confocal fields of MSC / Jurkat co-cultures with ground truth.

>>> from hcsmito.synth import SynthParams, generate_field
>>> f = generate_field(SynthParams(), condition="DMSO", seed=0)
>>> f.image.shape, f.image.dtype
((3, 24, 384, 384), dtype('uint16'))

Variations of the assay and the microscope (well kinds, nanotube geometries, shallow
stacks, bleed-through, vignetting, tilted glass...) are named in :data:`VARIATIONS`:

>>> from hcsmito.synth import variation_params
>>> f = generate_field(variation_params("washed"), seed=0)
>>> f.summary["n_jurkat"], f.summary["n_foci"] > 0
(0, True)

A nuclear stain and an annexin V channel, with every cell's nucleus and fate in the truth,
are opt-in:

>>> p = SynthParams(shape=(16, 96, 96), n_msc=1, nuclear_channel=True, annexin_channel=True)
>>> f = generate_field(p, condition="ara-C", seed=0)
>>> f.channel_labels
('GFP', 'MitoTracker Red', 'Phalloidin', 'Hoechst', 'Annexin V')
>>> len(f.tables["nuclei"]) == f.summary["n_msc"] + f.summary["n_jurkat"]
True
"""

from hcsmito.synth.field import (
    CHANNEL_COLORS,
    CHANNEL_LABELS,
    SynthField,
    channel_colors,
    generate_field,
)
from hcsmito.synth.params import (
    CONDITIONS,
    FATE_CONDITIONS,
    PLATE_CONDITIONS,
    Condition,
    SynthParams,
    resolve_condition,
)
from hcsmito.synth.plate import default_layout, field_seed, read_truth, write_synth_plate
from hcsmito.synth.variations import VARIATIONS, variation_params

__all__ = [
    "CHANNEL_COLORS",
    "CHANNEL_LABELS",
    "CONDITIONS",
    "FATE_CONDITIONS",
    "PLATE_CONDITIONS",
    "Condition",
    "SynthField",
    "SynthParams",
    "VARIATIONS",
    "channel_colors",
    "default_layout",
    "field_seed",
    "generate_field",
    "read_truth",
    "resolve_condition",
    "variation_params",
    "write_synth_plate",
]
