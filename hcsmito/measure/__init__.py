"""Measurements: connected components and per-object morphometry (one pass, CPU or GPU)."""

from hcsmito.measure.label import label
from hcsmito.measure.morphometry import (
    PROPERTIES,
    aggregate_by_parent,
    regionprops_table,
    table_to_dataframe,
)

__all__ = [
    "PROPERTIES",
    "aggregate_by_parent",
    "label",
    "regionprops_table",
    "table_to_dataframe",
]
