"""Synthetic confocal fields of MSC / Jurkat co-cultures with ground truth.

>>> from hcsmito.synth import SynthParams, generate_field
>>> f = generate_field(SynthParams(), condition="DMSO", seed=0)
>>> f.image.shape, f.image.dtype
((3, 24, 384, 384), dtype('uint16'))
"""

from hcsmito.synth.field import CHANNEL_COLORS, CHANNEL_LABELS, SynthField, generate_field
from hcsmito.synth.params import (
    CONDITIONS,
    PLATE_CONDITIONS,
    Condition,
    SynthParams,
    resolve_condition,
)
from hcsmito.synth.plate import default_layout, field_seed, read_truth, write_synth_plate

__all__ = [
    "CHANNEL_COLORS",
    "CHANNEL_LABELS",
    "CONDITIONS",
    "PLATE_CONDITIONS",
    "Condition",
    "SynthField",
    "SynthParams",
    "default_layout",
    "field_seed",
    "generate_field",
    "read_truth",
    "resolve_condition",
    "write_synth_plate",
]
