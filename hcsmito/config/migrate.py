"""Earlier configs' keys, still read: the flat threshold keys of ``msc`` / ``jurkat``
(``threshold_method``, ``threshold_k``...) become their ``threshold`` mapping."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

__all__ = ["FLAT_THRESHOLD", "migrate_threshold"]

log = logging.getLogger(__name__)

#: The flat threshold keys of msc / jurkat before ``threshold:`` (still read, migrated).
FLAT_THRESHOLD = {
    "threshold_method": "method",
    "threshold_k": "k",
    "threshold_fraction": "fraction",
    "threshold_value": "value",
}


def migrate_threshold(section: str, data: Any) -> Any:
    """``data`` of section msc / jurkat with its flat threshold keys moved into its
    ``threshold`` mapping, and a one-line deprecation warning naming them.

    The method is ``threshold_method``, else ``manual`` where only ``threshold_value`` is
    given (a value alone used to be ignored silently), else the mapping's; the mapping is
    kept where the method stays, and only the keys of that method are carried over.
    """
    if not isinstance(data, Mapping) or not any(k in data for k in FLAT_THRESHOLD):
        return data
    data = dict(data)
    flat = {new: data.pop(old) for old, new in FLAT_THRESHOLD.items() if old in data}
    nested = data.get("threshold")
    nested = {"method": nested} if isinstance(nested, str) else dict(nested or {})
    method = flat.get("method")
    if method is None:
        method = "manual" if flat.get("value") is not None else nested.get("method", "auto")
    if method != nested.get("method", "auto"):
        nested = {}
    nested["method"] = method
    keys = {"auto": ("k", "fraction"), "manual": ("value",)}.get(str(method), ())
    nested.update({k: v for k, v in flat.items() if k in keys and v is not None})
    data["threshold"] = nested
    old = ", ".join(f"{section}.{k}" for k, v in FLAT_THRESHOLD.items() if v in flat)
    shown = ", ".join(f"{k}: {v}" for k, v in nested.items())
    log.warning("config: deprecated %s, read as %s.threshold: {%s}", old, section, shown)
    return data
