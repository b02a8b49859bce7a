"""The fused per-field chain: deconvolve → background → segment → foci → morphometry.

:func:`process_field` is pure computation on the arrays of one field (no I/O): the runner
loads the channels, calls it, and writes what it returns. It moves the channels to the
backend once, keeps every intermediate there, and copies back only the label images and
the tables.

Modules: :mod:`~hcsmito.pipeline.prepare` (checks, deconvolution, background),
:mod:`~hcsmito.pipeline.field` (:func:`process_field` and its phases),
:mod:`~hcsmito.pipeline.tables` (the output tables), :mod:`~hcsmito.pipeline.plate`
(plate-level thresholds from sampled fields).
"""

from hcsmito.pipeline.field import FieldResult, process_field
from hcsmito.pipeline.plate import plate_thresholds, threshold_sample, with_thresholds

__all__ = [
    "FieldResult",
    "plate_thresholds",
    "process_field",
    "threshold_sample",
    "with_thresholds",
]
