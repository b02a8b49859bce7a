"""Channel roles: which channel of a field is the MSC (GFP), the mitochondria, the actin.

:func:`resolve_channel_roles` finds each role's channel index from the channel labels, by a
label or index the config gives, else by a default label pattern
(:data:`DEFAULT_ROLE_PATTERNS`), and refuses ambiguous or missing channels with a message
that lists the labels present and the config key to set. A role that
:mod:`hcsmito.schema` does not declare is a marker the config names
(``markers.channels``): always a label or an index, its key ``markers.channels.<name>``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence

import numpy as np

from hcsmito import schema
from hcsmito.io.errors import PlateError

__all__ = ["DEFAULT_ROLE_PATTERNS", "resolve_channel_roles"]

log = logging.getLogger(__name__)

#: Case-insensitive regular expressions matched (as substrings) against channel labels,
#: by role: the patterns of :data:`hcsmito.schema.ROLES` when this module was imported.
DEFAULT_ROLE_PATTERNS: dict[str, str] = {r.name: r.pattern for r in schema.ROLES}


def _patterns() -> dict[str, str]:
    return {r.name: r.pattern for r in schema.ROLES}


def resolve_channel_roles(
    labels: Sequence[str],
    roles: Mapping[str, str | int | None] | None = None,
    *,
    required: Sequence[str] | None = None,
    where: str = "",
) -> dict[str, int | None]:
    """Find the channel index of each role from the channel labels.

    Parameters
    ----------
    labels : sequence of str
        Channel labels (``FieldImage.channel_labels``).
    roles : mapping, optional
        Role -> ``None`` (default pattern, see :data:`DEFAULT_ROLE_PATTERNS`: a
        case-insensitive substring), a label (case-insensitive exact match) or a 0-based
        index. Default: every declared role (:mod:`hcsmito.schema`), unset. Other names
        are markers the config adds (``Config.channel_roles``).
    required : sequence of str, optional
        Roles that must be found (default: the roles declared ``required`` in
        :mod:`hcsmito.schema`, i.e. ``mito``). Other roles left to their default pattern resolve to
        ``None`` when no label matches (and this is logged).
    where : str, optional
        The plate / field, for messages.

    Returns
    -------
    dict
        Role -> channel index, or None for an optional role that is absent.

    Raises
    ------
    PlateError
        A required role is absent, a label given explicitly is absent, an index is out of
        range, a default pattern matches several channels, or two roles share a channel.
        The message lists the labels present and says to set ``channels.<role>``.
    """
    patterns = _patterns()
    if roles is None:
        roles = dict.fromkeys(patterns)
    if required is None:
        required = [r.name for r in schema.ROLES if r.required]
    labels = list(labels)
    lower = [lab.lower() for lab in labels]
    at = f"{where}: " if where else ""
    declared = set(schema.role_names())

    def fix(role: str) -> str:
        key = f"channels.{role}" if role in declared else f"markers.channels.{role}"
        return f"Set `{key}` in the config to a channel label or a 0-based index."

    def what(role: str) -> str:
        return "channel role" if role in declared else "marker"

    out: dict[str, int | None] = {}
    for role, spec in roles.items():
        if isinstance(spec, bool):
            raise PlateError(f"{at}{what(role)} {role!r}: {spec!r} is neither a label nor index")
        if isinstance(spec, int | np.integer):
            if not 0 <= spec < len(labels):
                raise PlateError(
                    f"{at}{what(role)} {role!r} = {spec} is out of range: the image has "
                    f"{len(labels)} channels {labels}. " + fix(role)
                )
            out[role] = int(spec)
        elif isinstance(spec, str):
            hits = [i for i, lab in enumerate(lower) if lab == spec.lower()]
            if not hits:
                raise PlateError(
                    f"{at}{what(role)} {role!r} = {spec!r} matches no channel label; the "
                    f"labels are {labels}. " + fix(role)
                )
            out[role] = hits[0]
        elif spec is None:
            pattern = patterns.get(role)
            if pattern is None:
                raise PlateError(
                    f"{at}{what(role)} {role!r} has no default label pattern. " + fix(role)
                )
            hits = [i for i, lab in enumerate(lower) if re.search(pattern, lab)]
            if len(hits) > 1:
                raise PlateError(
                    f"{at}channel role {role!r}: labels {[labels[i] for i in hits]} all match "
                    f"the default pattern {pattern!r}. " + fix(role)
                )
            if not hits:
                if role in required:
                    raise PlateError(
                        f"{at}no channel for the required role {role!r}: no label contains "
                        f"{pattern!r}; the labels are {labels}. " + fix(role)
                    )
                log.info("%sno channel for optional role %r among %s", at, role, labels)
            out[role] = hits[0] if hits else None
        else:
            raise PlateError(f"{at}{what(role)} {role!r}: {spec!r} is neither a label nor index")
    taken: dict[int, str] = {}
    for role, idx in out.items():
        if idx is None:
            continue
        if idx in taken:
            raise PlateError(
                f"{at}channel roles {taken[idx]!r} and {role!r} both resolve to channel {idx} "
                f"({labels[idx]!r}). " + fix(role)
            )
        taken[idx] = role
    return out
