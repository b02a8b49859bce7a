"""Plates in and out: OME-NGFF HCS readers and writers, name rules, TIFF import.

- :mod:`hcsmito.io.plate` -- ``open_plate``, ``open_image``, ``resolve_channel_roles``
- :mod:`hcsmito.io.writer` -- ``create_plate``, ``write_image``, ``write_labels``
- :mod:`hcsmito.io.tiff_import` -- ``import_tiffs``
- :mod:`hcsmito.io.ngff` -- NGFF 0.4 / 0.5 metadata models and ``PlateError``
- :mod:`hcsmito.io.names` -- well / field name rules
"""

from hcsmito.io.ngff import PlateError
from hcsmito.io.plate import (
    FieldImage,
    FieldRef,
    Plate,
    open_image,
    open_plate,
    resolve_channel_roles,
)
from hcsmito.io.writer import create_plate, write_image, write_labels

__all__ = [
    "FieldImage",
    "FieldRef",
    "Plate",
    "PlateError",
    "open_image",
    "open_plate",
    "resolve_channel_roles",
    "create_plate",
    "write_image",
    "write_labels",
]
