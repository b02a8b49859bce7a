"""Parameters of the synthetic co-culture generator and the experimental conditions.

Every physical quantity is a parameter in micrometres, photons or relative concentration,
never a constant buried in the renderer: the stages are tuned and tested on fields drawn
with these values and with values scaled by :meth:`SynthParams.varied`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "CHANNELS",
    "CONDITIONS",
    "FATE_CHANNELS",
    "FATE_CONDITIONS",
    "Condition",
    "SynthParams",
    "resolve_condition",
]


@dataclass(frozen=True)
class Condition:
    """What a treatment does to the co-culture, as rates the generator draws from.

    Attributes
    ----------
    foci_per_msc : float
        Mean number of transferred red foci per MSC (Poisson), for a cell of the nominal
        area (scaled down for cells cut by the field border).
    adhesion_share : float
        Probability that a Jurkat cell is adhered on top of an MSC (binomial).
    tnt_rate : float
        Mean number of tunneling nanotubes per field (Poisson).
    description : str
        What the treatment is.
    apoptosis_jurkat : float
        Probability that a Jurkat cell with no contact with an MSC (on the glass, no
        nanotube to an MSC) is apoptotic.
    apoptosis_protection : float
        Share of the apoptosis a treatment adds above the vehicle's (DMSO) that contact
        with an MSC prevents: a Jurkat cell adhered on an MSC or joined to one by a
        nanotube is apoptotic with probability ``base + (apoptosis_jurkat - base) * (1 -
        apoptosis_protection)``, ``base`` the DMSO share (:meth:`jurkat_apoptosis`). 0: no
        protection (actin or adhesion blocked).
    apoptosis_msc : float
        Probability that an MSC is apoptotic.
    """

    foci_per_msc: float
    adhesion_share: float
    tnt_rate: float
    description: str = ""
    apoptosis_jurkat: float = 0.08
    apoptosis_protection: float = 0.8
    apoptosis_msc: float = 0.03

    def jurkat_apoptosis(self, contact: bool) -> float:
        """Probability that a Jurkat cell is apoptotic, with or without MSC ``contact``
        (adhered on an MSC, or joined to one by a nanotube)."""
        free = self.apoptosis_jurkat
        if not contact:
            return free
        base = min(free, CONDITIONS["DMSO"].apoptosis_jurkat)
        return base + (free - base) * (1.0 - self.apoptosis_protection)


#: Conditions of the assay. Cytochalasin D depolymerises F-actin: no TNTs, little
#: transfer. Anti-ICAM-1 blocks the adhesion the transfer needs. 18-alpha-GA (gap
#: junctions) and dynasore (endocytosis) leave the TNT route open. Ara-C and MTX
#: (chemotherapy) raise the transfer and the apoptosis of Jurkat cells, which contact with
#: an MSC (and the transfer) mostly prevents; cytochalasin D and anti-ICAM-1 cancel that
#: protection (``apoptosis_protection=0``).
CONDITIONS: dict[str, Condition] = {
    "DMSO": Condition(6.0, 0.5, 3.0, "vehicle control"),
    "cytochalasin D": Condition(
        1.0,
        0.4,
        0.1,
        "actin polymerisation blocked: no TNTs",
        apoptosis_jurkat=0.10,
        apoptosis_protection=0.0,
        apoptosis_msc=0.04,
    ),
    "18-alpha-GA": Condition(5.5, 0.5, 3.0, "gap-junction blocker"),
    "dynasore": Condition(5.0, 0.5, 2.8, "dynamin (endocytosis) blocker", apoptosis_jurkat=0.09),
    "anti-ICAM-1": Condition(
        2.0, 0.12, 2.0, "ICAM-1 blocking antibody: adhesion cut", apoptosis_protection=0.0
    ),
    "ara-C": Condition(
        9.0,
        0.55,
        4.0,
        "cytarabine: more transfer",
        apoptosis_jurkat=0.42,
        apoptosis_msc=0.05,
    ),
    "MTX": Condition(
        8.0,
        0.55,
        3.5,
        "methotrexate: more transfer",
        apoptosis_jurkat=0.38,
        apoptosis_msc=0.05,
    ),
}


def resolve_condition(name: str) -> Condition:
    """The :class:`Condition` of a name in :data:`CONDITIONS` or of a combination such as
    ``"ara-C + anti-ICAM-1"``.

    A combination multiplies the effects of its parts relative to DMSO (treatments act
    independently); the adhesion share is capped at 1. Apoptosis combines as independent
    risks: the survival shares (``1 - apoptosis_*``) multiply relative to DMSO, and so do
    the protections (one treatment that cancels the protection cancels it in the mix).

    Raises
    ------
    ValueError
        If a part is not a known condition.
    """
    if name in CONDITIONS:
        return CONDITIONS[name]
    parts = [part.strip() for part in str(name).split("+")]
    unknown = [part for part in parts if part not in CONDITIONS]
    if unknown or len(parts) < 2:
        raise ValueError(
            f"unknown condition {name!r}: use one of {sorted(CONDITIONS)} "
            "or a combination joined by '+', e.g. 'ara-C + anti-ICAM-1'"
        )
    ref = CONDITIONS["DMSO"]
    foci, adhesion, tnt = ref.foci_per_msc, ref.adhesion_share, ref.tnt_rate
    live_j, live_m = 1.0 - ref.apoptosis_jurkat, 1.0 - ref.apoptosis_msc
    protection = ref.apoptosis_protection
    for part in parts:
        c = CONDITIONS[part]
        foci *= c.foci_per_msc / ref.foci_per_msc
        adhesion *= c.adhesion_share / ref.adhesion_share
        tnt *= c.tnt_rate / ref.tnt_rate
        live_j *= (1.0 - c.apoptosis_jurkat) / (1.0 - ref.apoptosis_jurkat)
        live_m *= (1.0 - c.apoptosis_msc) / (1.0 - ref.apoptosis_msc)
        protection *= c.apoptosis_protection / ref.apoptosis_protection
    return Condition(
        foci,
        min(adhesion, 1.0),
        tnt,
        " + ".join(parts),
        apoptosis_jurkat=1.0 - live_j,
        apoptosis_msc=1.0 - live_m,
        apoptosis_protection=min(protection, 1.0),
    )


#: Labels of the channels every field has, and of the nuclear and annexin V channels
#: appended when drawn (:attr:`SynthParams.channel_labels`).
CHANNELS = ("GFP", "MitoTracker Red", "Phalloidin")
FATE_CHANNELS = ("Hoechst", "Annexin V")

#: Conditions a default plate lays out (one per plate column).
PLATE_CONDITIONS = ("DMSO", "cytochalasin D", "18-alpha-GA", "dynasore", "anti-ICAM-1")

#: Conditions of the protection half of the assay (one per plate column, e.g.
#: ``default_layout(FATE_CONDITIONS)``): chemotherapy raises Jurkat apoptosis, MSC contact
#: lowers it, cytochalasin D and anti-ICAM-1 cancel the protection.
FATE_CONDITIONS = ("DMSO", "ara-C", "ara-C + cytochalasin D", "ara-C + anti-ICAM-1", "MTX")

Pair = tuple[float, float]

# Scale factors understood by SynthParams.varied, and the fields each one scales.
_FACTOR_FIELDS: dict[str, tuple[str, ...]] = {
    "brightness": ("brightness",),
    "noise": ("read_noise", "background"),
    "cell_size": (
        "msc_diameter_um",
        "msc_nucleus_diameter_um",
        "jurkat_diameter_um",
        "fragment_diameter_um",
    ),
    "density": ("n_msc", "n_jurkat"),
    "foci_size": ("foci_diameter_um",),
    "tnt_width": ("tnt_diameter_um",),
}


class SynthParams(BaseModel):
    """Everything physical about a synthetic confocal field of an MSC / Jurkat co-culture.

    Lengths are in µm, intensities in relative concentration (a dye concentration of 1
    gives ``brightness`` expected photons per voxel once blurred), light in photons.
    The glass is the plane ``z = glass_z_um``; voxel ``i`` has its centre at ``i * dz``.

    Parameters
    ----------
    shape : (Z, Y, X) or (Y, X) tuple of int
        Field shape in voxels. A 2-D shape gives a 2-D field: the 3-D scene is rendered
        with ``voxel_size[0]`` as z step and projected (maximum) to one optical section.
    voxel_size : (dz, dy, dx) tuple of float
        Voxel size, µm. For 2-D shapes ``dz`` is the z step of the hidden 3-D scene.
    glass_z_um : float
        Height of the coverslip surface above the first plane, µm.
    n_msc, n_msc_spread, msc_diameter_um, msc_diameter_cv
        Mean number of MSCs per field, the field-to-field spread of that number (uniform,
        +-), their nominal diameter (µm) and its relative spread. Cells too small once
        tessellated, or with no room, are left out: the truth counts what was drawn.
    msc_irregularity : float
        Relative radial perturbation of the MSC outline by smooth noise (0 = discs).
    msc_height_um, msc_edge_height_um, msc_dome_um
        Cytoplasm thickness at the plateau and at the cell edge (µm), and the distance from
        the edge over which it rises (µm): a flat dome.
    msc_nucleus_diameter_um, msc_nucleus_height_um, msc_nucleus_gfp
        Nucleus footprint diameter and top height (µm), its GFP relative to the cytoplasm.
    msc_gfp, msc_gfp_cv, msc_texture
        Cytoplasm GFP concentration, its cell-to-cell spread and smooth in-cell texture.
    msc_red, msc_actin, msc_cortex_actin, msc_cortex_um
        MitoTracker autofluorescence of MSCs, diffuse actin, cortical actin and its width.
    fibres_per_msc, fibre_width_um, fibre_actin, fibre_height_um
        Basal stress fibres: number per cell, width (µm), concentration, height of the
        fibre plane above the glass (µm).
    n_jurkat, n_jurkat_spread, jurkat_diameter_um, jurkat_diameter_cv, jurkat_aspect_z
        Donor cells: mean count and its spread (uniform, +-), diameter (µm), its relative
        spread, height/diameter ratio.
    jurkat_mito_count, jurkat_mito_intensity, jurkat_mito_shell
        Mitochondria per Jurkat cell, their concentration, and the shell they fill as a
        fraction of the radius (inner, outer) around a mitochondria-free nucleus.
    jurkat_red, jurkat_actin, jurkat_gap_um, jurkat_glass_clearance_um
        Diffuse MitoTracker and cortical actin of Jurkats; minimal gap between two Jurkat
        cells; distance kept from MSCs by Jurkats lying on the glass (µm).
    foci_diameter_um, foci_intensity, foci_min_distance_um, foci_jurkat_clearance_um
        Transferred foci: diameter range (µm), concentration, minimal centre distance
        between foci (lateral, µm), lateral clearance from Jurkat bodies (µm).
    foci_rate, adhesion_rate, tnt_rate
        Multipliers of the condition's foci per MSC, adhesion share and TNTs per field.
        Well kinds are drawn with the counts: ``n_jurkat=0`` is an MSC-only well (with
        ``foci_rate=0``: the MSC-only control; with the condition's foci: a washed
        co-culture, donor cells gone), ``n_msc=0`` a Jurkat-only well (cells on the glass,
        no foci, nanotubes between Jurkat cells only).
    tnt_diameter_um, tnt_height_um, tnt_length_um, tnt_actin, tnt_mito_share,
    tnt_mito_diameter_um
        Nanotubes: diameter range, height of the axis above glass (at the middle of the
        free part), free length range (µm), actin concentration, share carrying a
        mitochondrion and its diameter range (µm). How bright a tube is next to a stress
        fibre is the ratio of their actin per unit length, :meth:`tnt_fibre_ratio` (1.6 by
        default; 1-3 in real stainings, the ``tnt_dim`` and ``tnt_bright`` variations).
    tnt_slope_um : float
        Largest height difference (µm) between the two ends of a nanotube's free part: each
        tube draws a rise uniformly in ``[-tnt_slope_um, tnt_slope_um]`` from where it
        leaves its first cell to where it enters the second, about its height (0: level
        tubes). Tubes that no longer fit are drawn again, so steep rises on short tubes
        are rarer than drawn. The truth ``height_um`` of a sloping tube is that of the
        midpoint of its free part.
    tnt_clearance_um : float
        Lateral distance (µm) a nanotube keeps from every cell but its two ends.
    tnt_attempts : int
        Random tries to place each nanotube before giving it up.
    brightness : float
        Expected photons per voxel for a blurred concentration of 1.
    channel_gain : (3,) tuple of float
        Relative brightness of the GFP, MitoTracker and phalloidin channels.
    background : float
        Background photons per voxel (all channels).
    read_noise : float
        Camera read noise, electrons (Gaussian).
    offset : float
        Camera offset added to every pixel, ADU.
    gain : float
        ADU per photo-electron.
    shot_noise : bool
        Draw Poisson shot noise (False: expected photon counts, still with read noise).
    na, refractive_index, emission_um
        Objective NA, immersion index and per-channel emission wavelength (µm): the
        Gaussian PSF widths when ``psf_sigma_xy_um`` / ``psf_sigma_z_um`` are None.
    psf_sigma_xy_um, psf_sigma_z_um : float or None
        Gaussian PSF standard deviations (µm) for every channel, overriding the NA model.
    psf_broadening : float
        Factor by which the real PSF is wider than the diffraction-limited model
        (aberrations, pinhole); applies to the NA model only.
    psf_z_broadening : float
        Further factor on the axial PSF width only (NA model or ``psf_sigma_z_um``): an
        open pinhole or spherical aberration, as with coarse z steps.
    allow_cut : bool
        Let the top of a 3-D stack cut the cells (a shallow stack, or one that holds only the
        MSC layer): Jurkat cells then stick out of the top, truth labels are cut the same
        way, and a cell is in the truth when any part of it is in the stack (column
        ``cut`` of the Jurkat table). False: cells that do not fit are left out, and a
        stack too short for the MSCs is an error.
    crosstalk : 3 x 3 or C x C tuple of float
        Spectral bleed-through: ``crosstalk[i][j]`` is the light of dye ``j`` detected in
        channel ``i``, as a fraction of the light it gives its own channel ``j`` (channels
        GFP, MitoTracker Red, phalloidin; the diagonal is 0). E.g. ``crosstalk[1][0]`` GFP
        into the red channel, ``crosstalk[2][1]`` MitoTracker into the actin channel. With
        the Hoechst or annexin V channel, a 3 x 3 matrix leaves them out of the
        bleed-through; a C x C one (C channels, in the field's order) includes them.
    vignetting : float
        Illumination and collection fall-off: expected photons (background included) at a
        corner of the field over those at its centre (1 = flat). The profile is the
        cos⁴ law ``(1 + (r/f)²)⁻²`` of the distance ``r`` from the field centre, ``f``
        chosen to give this ratio at the corners.
    z_attenuation : float
        Depth attenuation and bleaching along the stack: expected photons (background
        included) in the last plane over those in the first (1 = none), exponential in
        between. Light from deep in the sample is scattered and aberrated, and planes
        acquired later are bleached more: a real 3-D DAPI stack (IDR idr0062A) loses 3x
        over 80 µm; 0.6-0.8 over a 15 µm co-culture stack is common.
    glass_tilt_um, glass_tilt_deg
        Tilt of the coverslip: the glass rises by ``glass_tilt_um`` over the field's width
        (x extent) along the direction ``glass_tilt_deg`` (degrees from +x towards +y;
        None: a random direction per field). The plane passes through ``glass_z_um`` at
        the field centre; the whole scene follows it (cells stand on the tilted glass).
    msc_crowding : float
        How tightly MSCs pack, 0 to 1. 0: cells drawn apart, each thinning to
        ``msc_edge_height_um`` at every border, also where it meets another cell. Above 0:
        seeds closer (minimal distance ``(0.62 - 0.12 c)`` diameters) and discs wider
        (``1 + 0.5 c``), so that neighbours meet along long borders, and the thickness at a
        border between two cells is the mix ``(1 - c) h_own + c h_glass`` of the dome that
        thins at every border and the dome that thins only where the cell meets the glass:
        at 1, touching domes show no GFP dip between them (cytoplasm-only segmentation
        merges them; nuclei separate them).
    nuclear_channel, annexin_channel : bool
        Draw a nuclear stain (channel ``"Hoechst"``) and an annexin V channel (``"Annexin
        V"``), appended in that order after the three others, whose pixels do not change
        (their random draws come from their own streams). With either, the truth holds the
        nuclei (label ``nuclei``, table ``nuclei``) and every cell's fate (column
        ``apoptotic``); apoptosis is drawn the same way with one or both.
    nucleus_hoechst, nucleus_hoechst_cv, nucleus_texture
        Hoechst concentration of a normal nucleus, its nucleus-to-nucleus spread, and the
        relative amplitude of its chromatin texture (smooth, about 1 µm; condensed
        chromatin is even).
    nuclear_haze : float
        DNA stain in the cytoplasm of every cell (RNA, mitochondrial DNA and unbound dye,
        strong with DAPI and in fixed cells), as a share of a normal nucleus's
        concentration (default 0; real widefield fields show 0.2-0.3). Drawn over the
        cells' truth labels outside their nuclei.
    jurkat_nucleus_fraction, jurkat_nucleus_offset
        Jurkat nucleus: a spheroid shaped like its cell, its diameter a fraction (range) of
        the cell's, its centre moved from the cell's by up to this fraction of the radii
        (never beyond the cell). MSC nuclei are flat ellipsoids under the nuclear bulge of
        the cell (``msc_nucleus_diameter_um``, ``msc_nucleus_height_um``), 0.3 µm above
        the glass and 0.6 µm below the cell top.
    apoptosis_rate : float
        Multiplier of the condition's apoptotic shares (capped at 1).
    apoptotic_fragmented_share : float
        Share of apoptotic cells whose nucleus is fragmented; the others are condensed.
    condensed_scale, apoptotic_hoechst
        Condensed nucleus: its diameter as a fraction (range) of the normal one (axes
        scaled alike; an MSC's rounds up, its height at most its width), and the Hoechst
        concentration of condensed chromatin (condensed nuclei and fragments) over a
        normal nucleus (range).
    fragment_count, fragment_diameter_um
        Fragmented nucleus: number of bodies (range; fewer when no more fit) and their
        diameters (µm, range, for a Jurkat nucleus; an MSC's scaled by how much larger its
        nucleus is), balls inside the old nucleus, apart by more than a voxel's diagonal.
    annexin_intensity, annexin_ring_um, annexin_background
        Annexin V on apoptotic cells: concentration in a shell ``annexin_ring_um`` thick at
        the cell surface (Jurkat spheroid; MSC top and edges); unbound annexin V in the
        medium (outside cells, above the glass) at ``annexin_background``.
    nuclear_gain, annexin_gain, nuclear_emission_um, annexin_emission_um
        Relative brightness (as ``channel_gain``) and emission wavelength (µm, for the PSF)
        of the Hoechst and annexin V channels.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # geometry
    shape: tuple[int, ...] = (24, 384, 384)
    voxel_size: tuple[float, float, float] = (0.6, 0.3, 0.3)
    glass_z_um: float = Field(1.0, ge=0)
    # MSCs
    n_msc: int = Field(4, ge=0)
    n_msc_spread: int = Field(1, ge=0)
    msc_diameter_um: float = Field(52.0, gt=0)
    msc_diameter_cv: float = Field(0.12, ge=0, lt=0.5)
    msc_irregularity: float = Field(0.22, ge=0, lt=0.6)
    msc_height_um: float = Field(3.6, gt=0)
    msc_edge_height_um: float = Field(1.3, gt=0)
    msc_dome_um: float = Field(8.0, gt=0)
    msc_nucleus_diameter_um: float = Field(15.0, ge=0)
    msc_nucleus_height_um: float = Field(5.5, gt=0)
    msc_nucleus_gfp: float = Field(1.25, ge=0)
    msc_gfp: float = Field(1.0, ge=0)
    msc_gfp_cv: float = Field(0.2, ge=0, lt=0.6)
    msc_texture: float = Field(0.2, ge=0, lt=0.8)
    msc_red: float = Field(0.03, ge=0)
    msc_actin: float = Field(0.12, ge=0)
    msc_cortex_actin: float = Field(0.5, ge=0)
    msc_cortex_um: float = Field(0.6, gt=0)
    fibres_per_msc: int = Field(8, ge=0)
    fibre_width_um: float = Field(0.5, gt=0)
    fibre_actin: float = Field(1.5, ge=0)
    fibre_height_um: float = Field(0.3, ge=0)
    # Jurkat cells
    n_jurkat: int = Field(8, ge=0)
    n_jurkat_spread: int = Field(2, ge=0)
    jurkat_diameter_um: float = Field(10.0, gt=0)
    jurkat_diameter_cv: float = Field(0.08, ge=0, lt=0.5)
    jurkat_aspect_z: float = Field(0.85, gt=0, le=1.5)
    jurkat_mito_count: int = Field(220, ge=0)
    jurkat_mito_intensity: float = Field(3.0, ge=0)
    jurkat_mito_shell: Pair = (0.62, 0.95)
    jurkat_red: float = Field(0.12, ge=0)
    jurkat_actin: float = Field(0.6, ge=0)
    jurkat_gap_um: float = Field(1.5, ge=0)
    jurkat_glass_clearance_um: float = Field(1.5, ge=0)
    # transferred foci
    foci_diameter_um: Pair = (0.3, 1.0)
    foci_intensity: float = Field(8.0, ge=0)
    foci_min_distance_um: float = Field(2.0, ge=0)
    foci_jurkat_clearance_um: float = Field(3.0, ge=0)
    foci_rate: float = Field(1.0, ge=0)
    adhesion_rate: float = Field(1.0, ge=0)
    # nanotubes
    tnt_rate: float = Field(1.0, ge=0)
    tnt_diameter_um: Pair = (0.2, 0.7)
    tnt_height_um: Pair = (1.0, 3.0)
    tnt_length_um: Pair = (4.0, 40.0)
    tnt_actin: float = Field(3.0, ge=0)
    tnt_slope_um: float = Field(0.0, ge=0)
    tnt_mito_share: float = Field(0.5, ge=0, le=1)
    tnt_mito_diameter_um: Pair = (0.5, 0.8)
    tnt_clearance_um: float = Field(1.0, ge=0)
    tnt_attempts: int = Field(300, ge=1)
    # light and camera
    brightness: float = Field(200.0, gt=0)
    channel_gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
    background: float = Field(10.0, ge=0)
    read_noise: float = Field(3.0, ge=0)
    offset: float = Field(100.0, ge=0)
    gain: float = Field(1.0, gt=0)
    shot_noise: bool = True
    # optics
    na: float = Field(1.2, gt=0)
    refractive_index: float = Field(1.33, gt=0)
    emission_um: tuple[float, float, float] = (0.51, 0.60, 0.67)
    psf_sigma_xy_um: float | None = Field(None, gt=0)
    psf_sigma_z_um: float | None = Field(None, gt=0)
    psf_broadening: float = Field(1.5, gt=0)
    psf_z_broadening: float = Field(1.0, gt=0)
    # acquisition artefacts and geometry of the stack
    allow_cut: bool = False
    crosstalk: tuple[tuple[float, ...], ...] = ((0.0, 0.0, 0.0),) * 3
    vignetting: float = Field(1.0, gt=0, le=1)
    z_attenuation: float = Field(1.0, gt=0, le=1)
    glass_tilt_um: float = Field(0.0, ge=0)
    glass_tilt_deg: float | None = 0.0
    # crowded MSCs
    msc_crowding: float = Field(0.0, ge=0, le=1)
    # cell fate: nuclei, apoptosis, annexin V
    nuclear_channel: bool = False
    annexin_channel: bool = False
    nucleus_hoechst: float = Field(1.0, ge=0)
    nucleus_hoechst_cv: float = Field(0.15, ge=0, lt=0.6)
    nucleus_texture: float = Field(0.2, ge=0, lt=0.8)
    nuclear_haze: float = Field(0.0, ge=0, lt=1)
    jurkat_nucleus_fraction: Pair = (0.6, 0.7)
    jurkat_nucleus_offset: float = Field(0.12, ge=0, lt=0.5)
    apoptosis_rate: float = Field(1.0, ge=0)
    apoptotic_fragmented_share: float = Field(0.4, ge=0, le=1)
    condensed_scale: Pair = (0.5, 0.6)
    apoptotic_hoechst: Pair = (1.5, 2.5)
    fragment_count: tuple[int, int] = (3, 6)
    fragment_diameter_um: Pair = (1.0, 2.0)
    annexin_intensity: float = Field(2.0, ge=0)
    annexin_ring_um: float = Field(0.5, gt=0)
    annexin_background: float = Field(0.04, ge=0)
    nuclear_gain: float = Field(1.0, gt=0)
    annexin_gain: float = Field(1.0, gt=0)
    nuclear_emission_um: float = Field(0.46, gt=0)
    annexin_emission_um: float = Field(0.70, gt=0)

    @field_validator("shape")
    @classmethod
    def _check_shape(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if len(v) not in (2, 3) or any(int(s) < 8 for s in v):
            raise ValueError(f"shape must be (Z, Y, X) or (Y, X) with every size >= 8, got {v}")
        return tuple(int(s) for s in v)

    @field_validator("voxel_size")
    @classmethod
    def _check_voxel(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(not (s > 0 and math.isfinite(s)) for s in v):
            raise ValueError(f"voxel_size must be positive finite µm (dz, dy, dx), got {v}")
        return v

    @model_validator(mode="after")
    def _check_ranges(self) -> SynthParams:
        for name in (
            "foci_diameter_um",
            "tnt_diameter_um",
            "tnt_height_um",
            "tnt_length_um",
            "tnt_mito_diameter_um",
            "jurkat_mito_shell",
            "jurkat_nucleus_fraction",
            "condensed_scale",
            "apoptotic_hoechst",
            "fragment_count",
            "fragment_diameter_um",
        ):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must be a range 0 < low <= high, got {(lo, hi)}")
        for name in ("jurkat_nucleus_fraction", "condensed_scale"):
            if getattr(self, name)[1] >= 1:
                raise ValueError(f"{name}={getattr(self, name)}: fractions below 1")
        if self.na >= self.refractive_index:
            raise ValueError(f"na={self.na} must be below refractive_index={self.refractive_index}")
        x = self.crosstalk
        if len(x) not in (3, self.n_channels) or any(len(row) != len(x) for row in x):
            raise ValueError(
                f"crosstalk has {len(x)} rows of {[len(r) for r in x]}: a 3 x 3 matrix, or "
                f"{self.n_channels} x {self.n_channels} for the channels {self.channel_labels}"
            )
        if any(not (0 <= v < 1 and math.isfinite(v)) for row in x for v in row) or any(
            x[i][i] != 0 for i in range(len(x))
        ):
            raise ValueError(
                f"crosstalk={x}: fractions 0 <= f < 1 off the diagonal and 0 on it "
                "(crosstalk[i][j] = light of dye j in channel i)"
            )
        if self.glass_tilt_deg is not None and not math.isfinite(self.glass_tilt_deg):
            raise ValueError(f"glass_tilt_deg={self.glass_tilt_deg}: a finite angle or None")
        low = self.glass_z_um - self.glass_rise_max_um()
        if low < 0 and not self.allow_cut:
            raise ValueError(
                f"the glass tilted by {self.glass_tilt_um} µm dips {-low:.2f} µm below the "
                f"first plane: raise glass_z_um to {self.glass_z_um - low:.2f} or set "
                "allow_cut=True"
            )
        return self

    # -- derived quantities ---------------------------------------------------------------

    @property
    def ndim(self) -> int:
        """2 or 3: the dimensionality of the image produced."""
        return len(self.shape)

    @property
    def channel_labels(self) -> tuple[str, ...]:
        """The labels of the field's channels, in order: GFP, MitoTracker Red, Phalloidin,
        then Hoechst and Annexin V when drawn."""
        return (*CHANNELS, *self._extra(FATE_CHANNELS))

    @property
    def n_channels(self) -> int:
        """Number of channels of the field (3 to 5)."""
        return len(self.channel_labels)

    @property
    def draws_fate(self) -> bool:
        """Whether the field's truth holds nuclei and cell fates (a nuclear or annexin V
        channel is drawn)."""
        return self.nuclear_channel or self.annexin_channel

    def _extra(self, values: tuple) -> tuple:
        """Of the values for the Hoechst and annexin V channels, those drawn."""
        on = (self.nuclear_channel, self.annexin_channel)
        return tuple(v for v, drawn in zip(values, on, strict=True) if drawn)

    def channel_gains(self) -> tuple[float, ...]:
        """Relative brightness of each channel of the field."""
        return (*self.channel_gain, *self._extra((self.nuclear_gain, self.annexin_gain)))

    def emissions_um(self) -> tuple[float, ...]:
        """Emission wavelength (µm) of each channel of the field."""
        extra = (self.nuclear_emission_um, self.annexin_emission_um)
        return (*self.emission_um, *self._extra(extra))

    @property
    def scene_shape(self) -> tuple[int, int, int]:
        """The (Z, Y, X) shape of the rendered 3-D scene (projected for 2-D fields)."""
        if self.ndim == 3:
            return self.shape  # type: ignore[return-value]
        nz = math.ceil(self.required_height_um() / self.voxel_size[0]) + 1
        return (nz, *self.shape)  # type: ignore[return-value]

    def required_height_um(self) -> float:
        """Scene height (µm) above plane 0 that MSCs and a Jurkat cell resting on one need."""
        jurkat = self.jurkat_diameter_um * self.jurkat_aspect_z
        tallest = max(
            self.msc_nucleus_height_um,
            self.msc_height_um + jurkat,
            jurkat * (1 + 2 * self.jurkat_diameter_cv),
            self.tnt_height_um[1] + 0.5 * self.tnt_slope_um,
        )
        return self.glass_z_um + self.glass_rise_max_um() + tallest + 0.5

    def glass_rise_max_um(self) -> float:
        """Largest height (µm) of the tilted glass above its height at the field centre, over
        the field and any tilt direction (0 for flat glass)."""
        if self.glass_tilt_um == 0:
            return 0.0
        ny, nx = self.shape[-2:]
        half_y, half_x = 0.5 * (ny - 1) * self.voxel_size[1], 0.5 * (nx - 1) * self.voxel_size[2]
        return self.glass_tilt_um / (nx * self.voxel_size[2]) * math.hypot(half_y, half_x)

    def tnt_fibre_ratio(self) -> float:
        """Actin per unit length of a nanotube of mean diameter over that of a stress fibre.

        Both are thinner than the PSF, so this is also the ratio of their peak brightness
        in the phalloidin channel (before noise): ``tnt_actin d² / (fibre_actin w²)``.
        """
        d = 0.5 * sum(self.tnt_diameter_um)
        fibre = self.fibre_actin * self.fibre_width_um**2
        return math.inf if fibre == 0 else self.tnt_actin * d**2 / fibre

    def psf_sigma_um(self) -> tuple[tuple[float, float], ...]:
        """Per channel of the field (:attr:`channel_labels`) (sigma_z, sigma_xy) of the
        Gaussian PSF, µm.

        Without explicit sigmas, the widefield Gaussian approximation of Zhang, Zerubia &
        Olivo-Marin (Appl. Opt. 2007): ``sigma_xy = 0.21 λ / NA``,
        ``sigma_z = 0.66 λ n / NA²``.
        """
        out = []
        for lam in self.emissions_um():
            k = self.psf_broadening
            sxy = self.psf_sigma_xy_um or k * 0.21 * lam / self.na
            sz = self.psf_sigma_z_um or k * 0.66 * lam * self.refractive_index / self.na**2
            if self.psf_z_broadening != 1:
                sz *= self.psf_z_broadening
            out.append((sz, sxy))
        return tuple(out)

    # -- variations -----------------------------------------------------------------------

    def varied(self, **factors: float) -> SynthParams:
        """These parameters with quantities scaled by the factors given.

        Parameters
        ----------
        **factors : float
            ``brightness`` (photons), ``noise`` (read noise and background), ``psf_width``
            (both PSF sigmas of every channel), ``voxel_size`` (all three voxel sizes; the
            shape in voxels is divided by the factor so the field keeps its physical size),
            ``cell_size`` (MSC, nucleus, Jurkat and nuclear fragment diameters; the scene
            gets taller when Jurkats no longer fit), ``density`` (MSC and Jurkat counts),
            ``foci_size``, ``tnt_width``, or the name of any numeric parameter (multiplied).

        Returns
        -------
        SynthParams
            A new, validated parameter set.

        Examples
        --------
        >>> p = SynthParams().varied(brightness=1.5, voxel_size=0.5)
        >>> p.voxel_size, p.shape
        ((0.3, 0.15, 0.15), (48, 768, 768))
        """
        values: dict[str, Any] = self.model_dump()
        for key, f in factors.items():
            if not (isinstance(f, int | float) and f > 0 and math.isfinite(f)):
                raise ValueError(f"factor {key}={f!r} must be a positive finite number")
            if key == "psf_width":
                values["psf_broadening"] = self.psf_broadening * f
                for name in ("psf_sigma_xy_um", "psf_sigma_z_um"):
                    values[name] = _scale(values[name], f)
            elif key == "voxel_size":
                values["voxel_size"] = tuple(v * f for v in self.voxel_size)
                values["shape"] = tuple(max(8, round(s / f)) for s in self.shape)
            elif key in _FACTOR_FIELDS:
                for name in _FACTOR_FIELDS[key]:
                    values[name] = _scale(values[name], f)
            elif key in values and not isinstance(values[key], bool):
                values[key] = _scale(values[key], f)
            else:
                known = sorted([*_FACTOR_FIELDS, "psf_width", "voxel_size"])
                raise ValueError(
                    f"unknown variation {key!r}: use one of {known} or a numeric parameter name"
                )
        out = SynthParams(**values)
        if out.ndim == 3 and not out.allow_cut:
            nz_needed = math.ceil(out.required_height_um() / out.voxel_size[0]) + 1
            if out.shape[0] < nz_needed and self.shape[0] * self.voxel_size[0] >= (
                self.required_height_um()
            ):
                out = SynthParams(**{**values, "shape": (nz_needed, *out.shape[1:])})
        return out


def _scale(value: Any, f: float) -> Any:
    if isinstance(value, tuple):
        return tuple(_scale(v, f) for v in value)
    if isinstance(value, int) and not isinstance(value, bool):
        return max(0, round(value * f))
    if value is None:
        return None
    return value * f
