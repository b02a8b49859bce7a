"""The run configuration: pydantic models, YAML loading and ``--set`` overrides.

Every stage option lives here with its unit, default and allowed values; the stage
functions take the same names as keyword arguments, so a section of the config is passed
on as ``**section.stage_kwargs()``. Unknown keys and wrong types are errors that name the
key and what is allowed. ``conf/default.yaml`` (the MSC/T-ALL co-culture assay) is what
runs without ``--config``; ``--config NAME`` picks another shipped variant by name.

- :mod:`hcsmito.config.sections` -- the section models and :class:`Config`
- :mod:`hcsmito.config.load` -- ``load_config`` (YAML, shipped variants, ``--set``), errors
- :mod:`hcsmito.config.migrate` -- earlier configs' keys, still read
"""

from hcsmito.config.load import (
    ConfigError,
    config_hash,
    default_config_text,
    load_config,
    shipped_configs,
)
from hcsmito.config.migrate import FLAT_THRESHOLD, migrate_threshold
from hcsmito.config.sections import (
    FIELD_SECTIONS,
    Adhesion,
    Background,
    Channels,
    Config,
    Deconvolution,
    DepthAttenuation,
    FieldConfig,
    FociDetection,
    Input,
    JurkatSegmentation,
    MscSegmentation,
    NoDeconvolution,
    Optics,
    PlateThreshold,
    Psf,
    PsfBornWolf,
    PsfFile,
    PsfGaussian,
    QualityControl,
    Readouts,
    Resources,
    RichardsonLucy,
    Role,
    RoleName,
    Slurm,
    Statistics,
    TntDetection,
)

__all__ = [
    "FIELD_SECTIONS",
    "FLAT_THRESHOLD",
    "Adhesion",
    "Background",
    "DepthAttenuation",
    "Channels",
    "Config",
    "ConfigError",
    "Deconvolution",
    "FieldConfig",
    "FociDetection",
    "Input",
    "JurkatSegmentation",
    "MscSegmentation",
    "NoDeconvolution",
    "Optics",
    "PlateThreshold",
    "Psf",
    "PsfBornWolf",
    "PsfFile",
    "PsfGaussian",
    "QualityControl",
    "Readouts",
    "Resources",
    "RichardsonLucy",
    "Role",
    "RoleName",
    "Slurm",
    "Statistics",
    "TntDetection",
    "config_hash",
    "default_config_text",
    "load_config",
    "migrate_threshold",
    "shipped_configs",
]
