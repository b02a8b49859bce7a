"""The grid of assay and microscope variations the analysis must survive.

Each entry of :data:`VARIATIONS` is one plausible situation of this assay (a well kind, a
cell phenotype, a nanotube geometry, an acquisition artefact), written as changes to a
base :class:`~hcsmito.synth.params.SynthParams`; :func:`variation_params` applies one. The
accuracy benchmarks loop over the grid: the generator is a tool, not the truth, so the
stages are checked on what real plates do, not only on the generator's defaults.

An entry is a dict with the keys

- ``"doc"``: the situation, in one line;
- ``"scale"``: factors handed to :meth:`SynthParams.varied` (``brightness``, ``noise``,
  ``psf_width``, ``voxel_size``, ``cell_size``, ``density``, ... or a numeric parameter);
- ``"set"``: absolute values of parameters, applied after the factors, and four derived
  settings: ``depth_um`` (the stack's depth from its first plane to its last, µm: the
  number of planes at the base's z step, the field's y, x kept), ``dz`` (the z step, µm,
  the stack keeping its physical depth), ``grow_stack`` (True: add planes until
  whole cells fit, as an operator would) and ``tnt_fibre_ratio`` (``tnt_actin`` chosen so
  that :meth:`SynthParams.tnt_fibre_ratio` has this value).

>>> from hcsmito.synth import VARIATIONS, variation_params
>>> variation_params("shallow_cut").shape[0], variation_params("shallow_cut").allow_cut
(16, True)
"""

from __future__ import annotations

import math
from typing import Any

from hcsmito.synth.params import SynthParams

__all__ = ["VARIATIONS", "variation_params"]

# crosstalk of a simultaneous three-colour acquisition: GFP into the red channel, the
# MitoTracker Red into the far-red phalloidin channel, a little GFP into the far red
_BLEED = ((0.0, 0.0, 0.0), (0.08, 0.0, 0.0), (0.02, 0.10, 0.0))

#: Variation name -> ``{"doc", "scale", "set"}`` (see the module docstring).
VARIATIONS: dict[str, dict[str, Any]] = {
    "default": {"doc": "the base parameters unchanged"},
    # light, noise, optics
    "brightness x0.5": {
        "doc": "half the photons: weaker staining or a shorter exposure",
        "scale": {"brightness": 0.5},
    },
    "brightness x1.5": {
        "doc": "1.5x the photons: bright staining, longer exposure",
        "scale": {"brightness": 1.5},
    },
    "noise x0.5": {
        "doc": "half the read noise and background: a cooled camera, clean medium",
        "scale": {"noise": 0.5},
    },
    "noise x2": {
        "doc": "twice the read noise and background: an old camera, autofluorescent medium",
        "scale": {"noise": 2.0},
    },
    "psf x1.5": {
        "doc": "a PSF 1.5x wider: aberrations, an open pinhole, a lower-NA objective",
        "scale": {"psf_width": 1.5},
    },
    "voxel x1.5": {
        "doc": "1.5x coarser sampling in z, y and x (binning or a lower magnification)",
        "scale": {"voxel_size": 1.5},
    },
    "anisotropic": {
        "doc": "1 µm z steps with a 1.5x wider axial PSF (fast screening stacks)",
        "set": {"dz": 1.0, "psf_z_broadening": 1.5},
    },
    "vignetting": {
        "doc": "illumination falls to 60 % in the corners (uncorrected flat field)",
        "set": {"vignetting": 0.6},
    },
    "depth_attenuation": {
        "doc": "the signal falls to 55 % from the first plane to the last (depth, bleaching)",
        "set": {"z_attenuation": 0.55},
    },
    "bleed_through": {
        "doc": "simultaneous acquisition: 8 % GFP in red, 10 % red and 2 % GFP in actin",
        "set": {"crosstalk": _BLEED},
    },
    # stack geometry
    "tilted_glass": {
        "doc": "the coverslip rises 2 µm across the field in a random direction",
        "set": {
            "glass_tilt_um": 2.0,
            "glass_tilt_deg": None,
            "glass_z_um": 2.0,
            "grow_stack": True,
        },
    },
    "glass_high": {
        "doc": "the stack starts 3 µm below the glass (focus offset), planes added on top",
        "set": {"glass_z_um": 3.0, "grow_stack": True},
    },
    "shallow_cut": {
        "doc": "a 9 µm stack (16 planes of 0.6 µm) whose top cuts Jurkat cells on MSCs",
        "set": {"depth_um": 9.0, "allow_cut": True},
    },
    "msc_layer_only": {
        "doc": "a 5.4 µm stack (10 planes of 0.6 µm): the MSC layer, the rest cut",
        "set": {"depth_um": 5.4, "allow_cut": True},
    },
    # well kinds
    "msc_only": {
        "doc": "MSC-only control well: no donor cells, no transferred foci",
        "set": {"n_jurkat": 0, "foci_rate": 0.0},
    },
    "washed": {
        "doc": "washed co-culture: donor cells gone, the condition's foci kept in the MSCs",
        "set": {"n_jurkat": 0},
    },
    "jurkat_only": {
        "doc": "Jurkat-only control well: cells on the glass, nanotubes between them only",
        "set": {"n_msc": 0},
    },
    # cells
    "cell_size x0.75": {
        "doc": "cells 0.75x the size (small MSCs, 7.5 µm Jurkat cells)",
        "scale": {"cell_size": 0.75},
    },
    "cell_size x1.5": {
        "doc": "cells 1.5x the size (well-spread MSCs, blast-sized Jurkat cells)",
        "scale": {"cell_size": 1.5},
    },
    "density x0.5": {
        "doc": "half as many MSCs and Jurkat cells (sparse seeding)",
        "scale": {"density": 0.5},
    },
    "density x1.5": {
        "doc": "1.5x as many MSCs and Jurkat cells (dense seeding)",
        "scale": {"density": 1.5},
    },
    "crowded_msc": {
        "doc": "MSCs packed edge to edge, 1.5x as many: touching domes with no thinning "
        "between them (cytoplasm alone merges them; nuclei separate them)",
        "scale": {"n_msc": 1.5},
        "set": {"msc_crowding": 1.0},
    },
    "nuclear_haze": {
        "doc": "DNA stain in the cytoplasm at a quarter of the nuclear level (DAPI, fixed "
        "cells): whole cells show in the nuclear channel (nothing without one)",
        "set": {"nuclear_haze": 0.25},
    },
    "actin_rich_jurkat": {
        "doc": "Jurkat cortex 4x richer in F-actin (brighter than stress fibres), more adhered",
        "scale": {"jurkat_actin": 4.0, "adhesion_rate": 1.5},
    },
    # nanotubes
    "tnt_sloped": {
        "doc": "nanotube ends up to 4 µm apart in height (from high on a Jurkat to an MSC)",
        "set": {"tnt_slope_um": 4.0, "tnt_height_um": (1.5, 3.5)},
    },
    "tnt_long": {
        "doc": "long nanotubes, 25-60 µm free, in a sparser field that has room for them",
        "scale": {"n_msc": 0.5, "tnt_rate": 2.0},
        "set": {"tnt_length_um": (25.0, 60.0), "tnt_attempts": 600},
    },
    "tnt_bright": {
        "doc": "nanotubes 3x as bright as stress fibres (thick actin bundles)",
        "set": {"tnt_fibre_ratio": 3.0},
    },
    "tnt_dim": {
        "doc": "nanotubes as bright as stress fibres",
        "set": {"tnt_fibre_ratio": 1.0},
    },
    "tnt_thin": {
        "doc": "thin nanotubes, 0.1-0.35 µm across, well below the PSF",
        "scale": {"tnt_width": 0.5},
    },
    "nuclear_dim": {
        "doc": "a dim nuclear stain (little Hoechst, a short exposure): a quarter of its "
        "photons over the same camera offset and background (nothing without one)",
        "set": {"nuclear_gain": 0.25},
    },
}

_DERIVED = ("depth_um", "dz", "grow_stack", "tnt_fibre_ratio")


def variation_params(name: str, base: SynthParams | None = None) -> SynthParams:
    """The parameters of variation ``name`` of :data:`VARIATIONS`, applied to ``base``.

    Parameters
    ----------
    name : str
        A key of :data:`VARIATIONS`.
    base : SynthParams, optional
        The parameters varied (default ``SynthParams()``).

    Returns
    -------
    SynthParams
        A new, validated parameter set (``base`` itself for ``"default"``).

    Raises
    ------
    ValueError
        If ``name`` is unknown, or a variation of the stack is asked of a 2-D ``base``.
    """
    if name not in VARIATIONS:
        raise ValueError(f"unknown variation {name!r}: use one of {list(VARIATIONS)}")
    base = base if base is not None else SynthParams()
    entry = VARIATIONS[name]
    scale, setting = entry.get("scale", {}), dict(entry.get("set", {}))
    if not scale and not setting:
        return base
    p = base.varied(**scale) if scale else base
    derived = {k: setting.pop(k) for k in _DERIVED if k in setting}
    values = {**p.model_dump(), **setting}
    if {"depth_um", "dz", "grow_stack"} & set(derived) and p.ndim != 3:
        raise ValueError(f"variation {name!r} changes the z planes: give a 3-D base shape")
    if "dz" in derived:
        dz = float(derived["dz"])
        depth = (p.shape[0] - 1) * p.voxel_size[0]
        values["voxel_size"] = (dz, *p.voxel_size[1:])
        values["shape"] = (max(8, math.ceil(depth / dz - 1e-9) + 1), *p.shape[1:])
    if "depth_um" in derived:
        planes = round(float(derived["depth_um"]) / values["voxel_size"][0]) + 1
        values["shape"] = (max(8, planes), *p.shape[1:])
    if derived.get("grow_stack"):
        grown = SynthParams(**values)
        need = math.ceil(grown.required_height_um() / grown.voxel_size[0]) + 1
        values["shape"] = (max(grown.shape[0], need), *grown.shape[1:])
    if "tnt_fibre_ratio" in derived:
        unit = SynthParams(**{**values, "tnt_actin": 1.0}).tnt_fibre_ratio()
        values["tnt_actin"] = float(derived["tnt_fibre_ratio"]) / unit
    return SynthParams(**values)
