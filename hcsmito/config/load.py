"""Loading the run configuration: the YAML file (or a shipped variant by name), ``--set``
overrides, the one error that names every bad key, and the hash of the result."""

from __future__ import annotations

import hashlib
import json
import typing
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from hcsmito.config.sections import Config

__all__ = ["ConfigError", "config_hash", "default_config_text", "load_config", "shipped_configs"]


class ConfigError(ValueError):
    """The configuration is invalid; the message names each bad key and what is allowed."""


def _format_errors(exc: ValidationError, source: str, data: Any = None) -> str:
    """One line for one bad key (``invalid configuration (SOURCE): KEY: WHY``), else a
    line per key under a heading. KEY is what the user writes: without the tag of a
    tagged option, and a migrated flat threshold key as written (``msc.threshold_value``)."""
    lines = [f"invalid configuration ({source}):"]
    for err in exc.errors():
        loc = _walk(err["loc"])[0]
        msg = err["msg"]
        if err["type"] == "union_tag_invalid":  # the tag is the bad key
            ctx = err.get("ctx", {})
            loc += (str(ctx.get("discriminator", "method")).strip("'"),)
            msg = f"Input should be {ctx.get('expected_tags')} (got {ctx.get('tag')!r})"
        key = ".".join(str(p) for p in loc) or "(top level)"
        if len(loc) == 3 and loc[1] == "threshold" and isinstance(data, Mapping):
            old = f"threshold_{loc[2]}"
            if isinstance(data.get(loc[0]), Mapping) and old in data[loc[0]]:
                key = f"{loc[0]}.{old}"
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
            allowed = _allowed_keys(err["loc"][:-1])
            if allowed:
                msg += f"; allowed here: {', '.join(allowed)}"
        elif err["type"] in ("literal_error", "finite_number"):
            msg = f"{msg} (got {err.get('input')!r})"
        lines.append(f"  {key}: {msg}")
    if len(lines) == 2:
        return f"{lines[0]} {lines[1].strip()}"
    return "\n".join(lines)


def _tagged(annotation: Any) -> dict[str, type[BaseModel]]:
    """``{tag: model}`` of a tagged union of sections (on ``method`` or ``kind``)."""
    out: dict[str, type[BaseModel]] = {}
    for member in typing.get_args(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            for name in ("method", "kind"):
                if name in member.model_fields:
                    tags = typing.get_args(member.model_fields[name].annotation)
                    out.update(dict.fromkeys(tags, member))
    return out


def _walk(loc: tuple) -> tuple[tuple, Any, dict[str, type[BaseModel]]]:
    """An error location without the tags of tagged options
    (``deconvolution.richardson_lucy.iterations`` -> ``deconvolution.iterations``), the
    model it ends in (None where it leaves the models or ends in a tagged option) and the
    members of that tagged option by tag (empty for anything else)."""
    model: Any = Config
    keys: list = []
    members: dict[str, type[BaseModel]] = {}
    for part in loc:
        if part in members:  # the tag pydantic puts in the location
            model, members = members[part], {}
            continue
        keys.append(part)
        field = getattr(model, "model_fields", {}).get(part)
        ann = None if field is None else field.annotation
        members = _tagged(ann)
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return tuple(keys), None if members else model, members


def _allowed_keys(loc: tuple) -> list[str]:
    model = _walk(loc)[1]
    return [] if model is None else list(model.model_fields)


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key.path=value, e.g. foci.threshold_k=5")
    key, _, raw = item.partition("=")
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"--set {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: value is not valid YAML ({exc})") from None
    return path, value


def _apply(data: dict, path: list[str], value: Any) -> None:
    node = data
    # a tagged option given another tag starts afresh (as in a file: see _merge)
    fresh = path[-1] in ("method", "kind") and bool(_walk(tuple(path[:-1]))[2])
    for part in path[:-1]:
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {'.'.join(path)}: {part!r} is not a section")
        node = nxt
    if fresh and node.get(path[-1]) != value:
        node.clear()
    node[path[-1]] = value


def _merge(base: dict, over: Mapping) -> dict:
    out = dict(base)
    for key, value in over.items():
        # a tagged section that changes its tag is replaced whole, not merged
        same_tag = not (
            isinstance(value, Mapping)
            and isinstance(out.get(key), Mapping)
            and any(t in value and value[t] != out[key].get(t) for t in ("method", "kind"))
        )
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) and same_tag:
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def default_config_text() -> str:
    """The text of the packaged ``default.yaml``."""
    return resources.files("hcsmito").joinpath("conf/default.yaml").read_text()


def shipped_configs() -> list[str]:
    """The names of the shipped configs (``hcsmito/conf/NAME.yaml``), for ``--config NAME``."""
    conf = resources.files("hcsmito").joinpath("conf")
    return sorted(e.name[: -len(".yaml")] for e in conf.iterdir() if e.name.endswith(".yaml"))


def _config_text(path: str | Path) -> tuple[str, str]:
    """The text of ``--config PATH`` and its name for messages: an existing file, or a
    shipped config by name (no ``.yaml``, no folder: ``deconvolve``), from any folder."""
    p = Path(path)
    if p.is_file():
        return p.read_text(), str(p)
    names = shipped_configs()
    if p.suffix or len(p.parts) != 1:  # a file name or a path: the user meant a file
        raise ConfigError(
            f"config file {p} does not exist (shipped configs, by name: {', '.join(names)})"
        )
    if p.name not in names:
        raise ConfigError(
            f"config {p.name!r} is neither a file nor a shipped config: give a YAML file or "
            f"one of {', '.join(names)}"
        )
    conf = resources.files("hcsmito").joinpath(f"conf/{p.name}.yaml")
    return conf.read_text(), f"{p.name} (shipped conf/{p.name}.yaml)"


def load_config(
    path: str | Path | None = None, overrides: Iterable[str] = (), *, base: Mapping | None = None
) -> Config:
    """Read a YAML config (default: the packaged co-culture assay) and apply ``--set`` items.

    Parameters
    ----------
    path : path or str, optional
        A YAML file, or the name of a shipped config (:func:`shipped_configs`:
        ``deconvolve``, ``mito-only``...); keys not given keep the defaults of
        ``conf/default.yaml``.
    overrides : iterable of str
        ``section.key=value`` items (values parsed as YAML, e.g. ``foci.threshold_k=5``).
    base : mapping, optional
        Starting values instead of a file (for tests and the Python API).
    """
    if base is not None:
        data, source = json.loads(json.dumps(dict(base), default=str)), "mapping"
    elif path is None:
        data, source = yaml.safe_load(default_config_text()) or {}, "default.yaml"
    else:
        text, source = _config_text(path)
        try:
            user = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {source} is not valid YAML: {exc}") from None
        if not isinstance(user, dict):
            raise ConfigError(f"config {source}: the top level must be a mapping of sections")
        # a variant file changes the default assay only where it says so
        data = _merge(yaml.safe_load(default_config_text()) or {}, user)
    if not isinstance(data, dict):
        raise ConfigError(f"config {source}: the top level must be a mapping of sections")
    overrides = list(overrides)
    for item in overrides:
        _apply(data, *_parse_override(item))
    if overrides:
        source += " with --set " + " ".join(overrides)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source, data)) from None


#: Sections that decide how a run is carried out or summed up, not what a field's tables
#: and labels hold: changing them must not make a resumed run redo every field.
RUN_LEVEL_SECTIONS = ("resources", "statistics", "plate_map")


def config_hash(config: Config) -> str:
    """A stable hash of the configuration a field's results depend on (for the resume
    ledger): every section but :data:`RUN_LEVEL_SECTIONS` (workers, memory, scheduler,
    statistics and the plate map are read anew by each run)."""
    text = json.dumps(config.model_dump(mode="json", exclude=set(RUN_LEVEL_SECTIONS)),
                      sort_keys=True)  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()[:16]
