"""From per-field tables to per-well and per-condition readouts with statistics.

The readouts of the assay (:data:`READOUTS`, and those of a marker the config adds:
:func:`readouts_for`) are built bottom-up:

- **field**: the row of ``fields.parquet`` (ratios such as % MSC Red+ are
  ``numerator / denominator`` of that field, NaN when the denominator is 0);
- **well**: ratios pooled over the well's fields (``sum(numerator) / sum(denominator)``,
  so that a field with few cells weighs less), per-field quantities averaged over fields;
- **experiment**: the mean of the well values of one ``(condition, day, replicate)``.

The *replicate unit* (``unit="field" | "well" | "experiment"``) chooses which of these
levels are the independent samples of the mean ± SEM and of the tests. Fields whose
``status`` is not ``"ok"`` are left out everywhere and counted (``n_fields_failed``);
``ok`` fields carrying a QC flag listed in ``exclude_flags`` (:data:`hcsmito.qc.QC_FLAGS`)
are left out of every well value and statistic too, and counted (``n_fields_excluded``).
Wells the plate map does not list are kept in the well table (for the plate heatmaps) but
left out of the statistics.

Tests per readout and day (:func:`hcsmito.stats.compare_conditions`): Welch's t-test of
each condition against the control, one-way ANOVA over all conditions, Tukey HSD or
Dunnett against the control; with several days, a linear trend over day per condition.

Modules: :mod:`~hcsmito.aggregate.readouts` (what is measured),
:mod:`~hcsmito.aggregate.red_positive` (the red+ rule), :mod:`~hcsmito.aggregate.tables`
(the aggregation), :mod:`~hcsmito.aggregate.files` (a run folder's aggregates on disk).
"""

from hcsmito.aggregate.files import read_aggregates, read_manifest, read_tables, write_aggregates
from hcsmito.aggregate.readouts import (
    READOUTS,
    UNITS,
    Readout,
    find_readout,
    readout_label,
    readouts_for,
)
from hcsmito.aggregate.red_positive import apply_red_positive, calibrate_red_positive
from hcsmito.aggregate.tables import aggregate_tables

__all__ = [
    "READOUTS",
    "UNITS",
    "Readout",
    "aggregate_tables",
    "apply_red_positive",
    "calibrate_red_positive",
    "find_readout",
    "read_aggregates",
    "read_manifest",
    "read_tables",
    "readout_label",
    "readouts_for",
    "write_aggregates",
]
