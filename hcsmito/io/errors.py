"""The one error type of :mod:`hcsmito.io`, shared by the name rules, models, reader and writer."""

from __future__ import annotations

__all__ = ["PlateError"]


class PlateError(ValueError):
    """An OME-Zarr plate, image or name that hcsmito cannot read or write.

    The message names the plate / node (path inside the store) and the rule broken, and
    says what to fix.
    """
