"""A local OME-Zarr store opened read-only, and its NGFF version: shared by reader and writer.

:class:`Store` opens groups and arrays with messages that name the plate and the node, and
reads a group's NGFF attributes (under ``"ome"`` for 0.5, at the top level for 0.4);
:func:`detect_version` tells NGFF 0.5 (zarr v3) from 0.4 (zarr v2) at a store's root.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import zarr
from zarr.storage import LocalStore

from hcsmito.io.errors import PlateError

__all__ = ["Store", "detect_version"]

_METADATA_FILES = ("zarr.json", ".zgroup", ".zattrs", ".zarray")
_METADATA_MAX_BYTES = 64 * 2**20  # a 1536-well plate's metadata is well under 1 MiB


class Store:
    """A local zarr store opened read-only, with messages that name the plate."""

    def __init__(self, path: Path):
        if not path.is_dir():
            raise PlateError(f"{path}: no such directory: give the path of an OME-Zarr store")
        self.path = path
        self.name = path.name
        self.store = LocalStore(path, read_only=True)

    def where(self, node: str) -> str:
        return f"{self.name}/{node}" if node else self.name

    def check_metadata_files(self, node: str) -> None:
        """Refuse metadata files zarr must not read: link loops, devices, FIFOs, huge files.

        zarr reads a metadata file whole: ``zarr.json`` linked to ``/dev/zero`` would fill the
        memory, a FIFO would block for ever.
        """
        folder = self.path / node if node else self.path
        for name in _METADATA_FILES:
            f = folder / name
            try:
                st = os.stat(f)  # follows links
            except FileNotFoundError:
                if os.path.islink(f):
                    raise PlateError(
                        f"{self.where(node)}: {name} is a symbolic link to nothing: replace it "
                        "by the metadata file."
                    ) from None
                continue
            except OSError as exc:
                why = (
                    "is a symbolic-link loop"
                    if exc.errno == errno.ELOOP
                    else f"cannot be read ({exc.strerror})"
                )
                raise PlateError(
                    f"{self.where(node)}: {name} {why}: replace it by the metadata file."
                ) from None
            if not stat.S_ISREG(st.st_mode):
                raise PlateError(
                    f"{self.where(node)}: {name} is not a regular file (a device, FIFO or "
                    "folder): replace it by the metadata file."
                )
            if st.st_size > _METADATA_MAX_BYTES:
                raise PlateError(
                    f"{self.where(node)}: {name} is {st.st_size / 2**20:.0f} MiB, more than "
                    f"any NGFF metadata ({_METADATA_MAX_BYTES // 2**20} MiB): repair or "
                    "re-export the store."
                )

    def group(self, node: str, *, what: str) -> zarr.Group:
        self.check_metadata_files(node)
        try:
            return zarr.open_group(store=self.store, path=node, mode="r")
        except (FileNotFoundError, zarr.errors.NodeTypeValidationError) as exc:
            raise PlateError(
                f"{self.where(node)}: {what} is listed in the metadata but no zarr group exists "
                "there. Add the missing data or remove the entry from the metadata."
            ) from exc
        except Exception as exc:  # unreadable JSON, invalid zarr metadata
            raise PlateError(
                f"{self.where(node)}: cannot read the zarr group metadata of {what} "
                f"({type(exc).__name__}: {exc}). Repair or re-export the store."
            ) from exc

    def array(self, node: str, *, what: str) -> zarr.Array:
        self.check_metadata_files(node)
        try:
            return zarr.open_array(store=self.store, path=node, mode="r")
        except (FileNotFoundError, zarr.errors.NodeTypeValidationError) as exc:
            raise PlateError(
                f"{self.where(node)}: {what} is listed in the multiscales metadata but no zarr "
                "array exists there. Add the array or remove the dataset from 'multiscales'."
            ) from exc
        except Exception as exc:  # unreadable JSON, invalid zarr metadata
            raise PlateError(
                f"{self.where(node)}: cannot read the zarr array metadata of {what} "
                f"({type(exc).__name__}: {exc}). Repair or re-export the store."
            ) from exc

    def ome_attrs(self, grp: zarr.Group, node: str, version: str) -> dict:
        """NGFF attributes of a group: under ``"ome"`` for 0.5, top level for 0.4."""
        fmt = grp.metadata.zarr_format
        want = 3 if version == "0.5" else 2
        if fmt != want:
            raise PlateError(
                f"{self.where(node)}: a zarr v{fmt} group inside an NGFF {version} store "
                f"(0.5 needs zarr v3 throughout, 0.4 zarr v2). Re-export the data."
            )
        attrs = dict(grp.attrs)
        if version == "0.5":
            ome = attrs.get("ome")
            if not isinstance(ome, dict):
                raise PlateError(
                    f"{self.where(node)}: NGFF 0.5 metadata must be under the 'ome' key of "
                    "the group attributes; none found."
                )
            return ome
        return attrs


def detect_version(store: Store, grp: zarr.Group, key: str) -> str:
    """``"0.5"`` (zarr v3, ``ome.version``) or ``"0.4"`` (zarr v2), else a PlateError."""
    attrs = dict(grp.attrs)
    if grp.metadata.zarr_format == 3:
        ome = attrs.get("ome")
        version = ome.get("version") if isinstance(ome, dict) else None
        if version != "0.5":
            raise PlateError(
                f"{store.name}: a zarr v3 store must carry NGFF 0.5 metadata "
                f"(attributes 'ome' with 'version': '0.5'), found version {version!r}."
            )
        return "0.5"
    inner = attrs.get(key)
    if key == "multiscales" and isinstance(inner, list) and inner:
        inner = inner[0]
    version = inner.get("version") if isinstance(inner, dict) else None
    if version not in (None, "0.4"):
        raise PlateError(
            f"{store.name}: NGFF version {version!r} on zarr v2 is not supported: hcsmito reads "
            "0.4 (zarr v2) and 0.5 (zarr v3). Convert the store (e.g. with ome-zarr-py)."
        )
    return "0.4"
