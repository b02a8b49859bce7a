"""Plates in and out: OME-NGFF HCS readers and writers, name rules, TIFF import.

- :mod:`hcsmito.io.plate` -- ``open_plate``: a plate, all its metadata validated up front
- :mod:`hcsmito.io.image` -- ``open_image``: one image group validated, its pixels lazy
- :mod:`hcsmito.io.field` -- ``FieldRef``, ``FieldImage`` (lazy channels), ``check_finite``
- :mod:`hcsmito.io.roles` -- ``resolve_channel_roles``: channel roles from channel labels
- :mod:`hcsmito.io.writer` -- ``create_plate``, ``write_image``, ``write_labels``
- :mod:`hcsmito.io.tiff_import` -- ``import_tiffs``
- :mod:`hcsmito.io.store` -- a read-only store and its NGFF version (reader and writer)
- :mod:`hcsmito.io.ngff` -- NGFF 0.4 / 0.5 metadata models
- :mod:`hcsmito.io.names` -- well / field name rules
- :mod:`hcsmito.io.errors` -- ``PlateError``, the one error of this package
"""

from hcsmito.io.errors import PlateError
from hcsmito.io.plate import FieldImage, FieldRef, Plate, open_image, open_plate
from hcsmito.io.roles import resolve_channel_roles
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
