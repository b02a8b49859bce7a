"""The sections of the run configuration: one pydantic model per stage, and :class:`Config`.

Every stage option lives here with its unit, default and allowed values; the stage
functions take the same names as keyword arguments, so a section of the config is passed
on as ``**section.stage_kwargs()``. Unknown keys and wrong types are errors that name the
key and what is allowed (:mod:`hcsmito.config.load` formats them).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from hcsmito import schema
from hcsmito.config.migrate import migrate_threshold
from hcsmito.stages.threshold import AutoThreshold, HistogramMethod, Threshold

__all__ = [
    "Adhesion",
    "Background",
    "Channels",
    "Config",
    "Deconvolution",
    "DepthAttenuation",
    "FIELD_SECTIONS",
    "FieldConfig",
    "FociDetection",
    "Input",
    "JurkatSegmentation",
    "MarkerCalls",
    "MscSegmentation",
    "NucleiSegmentation",
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
]


#: Every section: unknown keys are errors, values are frozen, and every number is finite
#: (``.inf`` or ``.nan`` from YAML or ``--set`` would run and find nothing, without a word).
_SECTION_CONFIG = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class _Section(BaseModel):
    model_config = _SECTION_CONFIG

    def stage_kwargs(self, *, exclude: Iterable[str] = ()) -> dict[str, Any]:
        """The section as keyword arguments of its stage function (options such as
        ``threshold`` stay typed)."""
        return {k: getattr(self, k) for k in type(self).model_fields if k not in exclude}


Role = str | int | None


class _ChannelsBase(_Section):
    def roles(self) -> dict[str, Role]:
        """Role -> the label, index or None the config gives, for every declared role."""
        return {name: getattr(self, name) for name in schema.role_names()}


def _channels_model() -> type[_Section]:
    """``Channels``: one optional field per role of :data:`hcsmito.schema.ROLES`."""
    fields: dict[str, Any] = {
        r.name: (Role, Field(None, description=f"{r.doc}; unset: label ~ {r.pattern!r}"))
        for r in schema.ROLES
    }
    doc = (
        "Which channel plays which role: a label from ``omero`` (case-insensitive) or an "
        "index.\n\n``None`` finds the role by its label pattern (hcsmito.schema.ROLES): "
        '``msc`` ~ "gfp", ``mito`` ~ "mito", ``actin`` ~ "phalloidin" or "actin". ``mito`` '
        "is required; without ``msc`` the mito objects are measured over the whole field; "
        "without ``actin`` there are no TNTs."
    )
    return create_model("Channels", __base__=_ChannelsBase, __doc__=doc, **fields)


Channels = _channels_model()
#: A declared channel role (the roles a deconvolution may name).
RoleName = Literal[schema.role_names()]  # type: ignore[valid-type]


class Input(_Section):
    """What becomes of a field whose stored voxels are not all there or not all numbers
    (:mod:`hcsmito.io.plate`). By default such a field fails, named, and the others finish;
    a field of several time points is always refused before any field runs."""

    missing_chunks: Literal["fail", "fill"] = Field(
        "fail",
        description="a chunk missing from the store: fail the field, or read it as the fill "
        "value and flag the field (QC flag missing_chunks)",
    )
    nonfinite: Literal["fail", "flag"] = Field(
        "fail",
        description="NaN / Inf voxels of a float channel: fail the field, or set them to the "
        "channel's smallest finite value and flag the field (QC flag nonfinite_voxels)",
    )


class Optics(_Section):
    """Objective and dyes, for the theoretical PSF when the plate does not carry one."""

    na: float = Field(1.4, gt=0, le=1.7, description="numerical aperture")
    refractive_index: float = Field(1.518, ge=1.0, le=2.0, description="immersion medium")
    confocal: bool = Field(True, description="confocal (pinhole) PSF, else widefield")
    emission_um: dict[str, float] = Field(
        default_factory=lambda: {r.name: r.emission_um for r in schema.ROLES},
        description="emission wavelength per role, µm (GFP, MitoTracker Red, phalloidin-647); "
        "a role not listed keeps its declared wavelength (hcsmito.schema.ROLES)",
    )

    @field_validator("emission_um")
    @classmethod
    def _every_role(cls, v: dict[str, float]) -> dict[str, float]:
        return {**{r.name: r.emission_um for r in schema.ROLES}, **v}


class PsfGaussian(_Section):
    kind: Literal["gaussian"] = Field("gaussian", description="a Gaussian fit of the optics' PSF")


class PsfBornWolf(_Section):
    kind: Literal["born_wolf"] = Field(
        "born_wolf", description="Born & Wolf scalar PSF of the optics"
    )


class PsfFile(_Section):
    """A measured PSF (e.g. from ``hcsmito.stages.psf.psf_from_beads``) saved as .npy/.tif."""

    kind: Literal["file"] = Field("file", description="a measured PSF read from path")
    path: Path = Field(description="the PSF file (.npy or .tif, z, y, x)")
    voxel_size_um: tuple[float, float, float] = Field(description="(dz, dy, dx) of the file, µm")


Psf = Annotated[PsfGaussian | PsfBornWolf | PsfFile, Field(discriminator="kind")]


class NoDeconvolution(_Section):
    method: Literal["none"] = Field("none", description="no deconvolution")


class RichardsonLucy(_Section):
    """Richardson-Lucy deconvolution of the listed channel roles before detection."""

    method: Literal["richardson_lucy"] = Field("richardson_lucy", description="Richardson-Lucy")
    iterations: int = Field(10, ge=1, le=500, description="RL iterations")
    acceleration: Literal["biggs"] | None = Field(
        None, description="biggs: Biggs-Andrews extrapolation (fewer iterations); null: off"
    )
    tv: float = Field(0.0, ge=0.0, description="total-variation weight (0 = off)")
    channels: tuple[RoleName, ...] = Field(("mito",), description="the roles deconvolved")
    psf: Psf = Field(
        default_factory=PsfGaussian, description="kind: gaussian | born_wolf | file (path)"
    )
    max_voxels: int | None = Field(
        None, gt=0, description="tile fields larger than this many voxels (memory budget)"
    )
    transform: Literal["auto", "dct", "fft"] = Field(
        "auto", description="auto: DCT (mirror borders, half the work) for symmetric PSFs"
    )


Deconvolution = Annotated[NoDeconvolution | RichardsonLucy, Field(discriminator="method")]


class _ThresholdSection(_Section):
    """A segmentation section: its threshold is one option (:data:`Threshold`); the flat
    keys of earlier configs (``threshold_method``, ``threshold_k``...) are migrated."""

    threshold: Threshold = Field(
        default_factory=AutoThreshold,
        description="auto (k, fraction) | otsu | li | triangle | yen | manual (value)",
    )

    @model_validator(mode="before")
    @classmethod
    def _flat_threshold_keys(cls, data: Any) -> Any:
        return migrate_threshold(cls._section, data)


class Background(_Section):
    """Background subtraction of the detection channels (after deconvolution)."""

    method: Literal["none", "tophat", "gaussian"] = Field(
        "none", description="none | tophat (flat rolling ball) | gaussian (a wide blur)"
    )
    radius_um: float = Field(10.0, gt=0, description="top-hat ball radius, µm")
    sigma_um: float = Field(10.0, gt=0, description="Gaussian sigma, µm")


class DepthAttenuation(_Section):
    """Depth attenuation along the stack (:mod:`hcsmito.stages.attenuation`): measured on
    the objects of the msc (else nuclei, else mito) channel, every detection channel
    corrected where it is significant."""

    method: Literal["auto", "none"] = Field(
        "auto", description="auto (measure, correct where significant) | none"
    )
    edge_um: float = Field(
        0.5, ge=0, description="voxels this close to an object's ends in z are not measured, µm"
    )
    min_change: float = Field(
        0.25, gt=0, lt=1, description="smallest fall over the stack that is corrected (share)"
    )
    flag_below: float = Field(
        0.35, gt=0, lt=1, description="a fall below this share is flagged z_attenuation"
    )


class MscSegmentation(_ThresholdSection):
    """Options of :func:`hcsmito.stages.segmentation.segment_msc` (sizes in µm)."""

    _section: ClassVar[str] = "msc"

    msc_diameter_um: float = Field(50.0, gt=0, description="expected MSC diameter, µm")
    smooth_um: float = Field(
        1.0, ge=0, description="lateral Gaussian sigma before thresholding, µm"
    )
    smooth_z_um: float = Field(0.0, ge=0, description="Gaussian sigma along z, µm")
    split: Literal["auto", "height", "shape", "intensity"] = Field(
        "auto", description="what separates touching MSCs"
    )
    seed_dynamics: float = Field(
        0.3, gt=0, description="height split: valley depth between cells / plateau height"
    )
    seed_smooth_um: float | None = Field(
        None, gt=0, description="intensity split: seed blur, µm (null: 0.06 x diameter)"
    )
    min_separation_um: float | None = Field(
        None, gt=0, description="shape/intensity split: seed distance, µm (null: 0.3 x diameter)"
    )
    min_area_um2: float | None = Field(
        None, ge=0, description="smallest footprint kept, µm² (null: disc of 0.15 x diameter)"
    )


class JurkatSegmentation(_ThresholdSection):
    """Options of :func:`hcsmito.stages.segmentation.segment_jurkat` (sizes in µm)."""

    _section: ClassVar[str] = "jurkat"

    enabled: bool = Field(
        True, description="detect donor bodies (false: single-channel plates, no donors)"
    )
    jurkat_diameter_um: float = Field(10.0, gt=0, description="expected body diameter, µm")
    smooth_um: float = Field(1.5, ge=0, description="Gaussian sigma before thresholding, µm")
    min_diameter_fraction: float = Field(
        0.5, ge=0, le=1, description="smallest footprint: a disc of this share of the diameter"
    )
    min_spread: float = Field(
        0.6, ge=0, le=1, description="light spread over the footprint (foci are ~0.45)"
    )
    min_separation_um: float | None = Field(
        None, gt=0, description="seed distance, µm (null: 0.6 x diameter)"
    )
    overlap_min: float = Field(
        0.5, ge=0, le=1, description="footprint share over an MSC that puts a body on it"
    )
    min_contrast: float = Field(
        1.0, ge=0, description="a body's red over the MSCs' own red (MSC haze is no body)"
    )
    max_area_factor: float = Field(
        6.0, gt=0, description="largest body footprint, in expected body areas"
    )

    def stage_kwargs(self, *, exclude: Iterable[str] = ()) -> dict[str, Any]:
        """The options of :func:`segment_jurkat` (``enabled`` is the pipeline's)."""
        return super().stage_kwargs(exclude={"enabled", *exclude})


class NucleiSegmentation(_ThresholdSection):
    """Options of :func:`hcsmito.stages.segmentation.segment_nuclei` and of what the
    nuclei do (sizes in µm). Used only where the plate has a ``nuclei`` channel."""

    _section: ClassVar[str] = "nuclei"

    nucleus_diameter_um: float = Field(
        8.0, gt=0, description="diameter of a typical (donor-cell) nucleus, µm"
    )
    smooth_um: float = Field(0.4, ge=0, description="Gaussian sigma before thresholding, µm")
    seed_dynamics: float = Field(
        0.25, gt=0, description="split depth between touching nuclei / nuclear radius"
    )
    fragment_fraction: float = Field(
        0.12, gt=0, lt=1, description="a piece below this share of a typical nucleus is a fragment"
    )
    fragment_merge_um: float = Field(
        1.5, ge=0, description="gap bridged between the pieces of one fragmented nucleus, µm"
    )
    min_volume_fraction: float = Field(
        0.01, ge=0, lt=1, description="smallest nucleus kept, as a share of a typical one"
    )
    seed_cells: bool = Field(
        True, description="one MSC per MSC nucleus, one donor per nucleus in a donor body"
    )
    min_share: float = Field(
        0.5, gt=0, le=1, description="share of a nucleus inside a cell that makes it that cell's"
    )
    cell_fragment_fraction: float = Field(
        0.35, gt=0, lt=1,
        description="small nuclei (this x the typical) in one cell are one fragmented nucleus",
    )  # fmt: skip
    condensed_diameter: float = Field(
        0.7, gt=0, description="condensed: diameter below this x the field's typical nucleus"
    )
    condensed_cell_ratio: float = Field(
        0.54, gt=0, lt=1, description="condensed donor nucleus: diameter below this x its cell's"
    )

    def stage_kwargs(self, *, exclude: Iterable[str] = ()) -> dict[str, Any]:
        """The options of :func:`segment_nuclei` (the others are the pipeline's)."""
        own = {
            "seed_cells",
            "min_share",
            "cell_fragment_fraction",
            "condensed_diameter",
            "condensed_cell_ratio",
        }
        return super().stage_kwargs(exclude={*own, *exclude})


class MarkerCalls(_Section):
    """Per-cell markers (:mod:`hcsmito.stages.markers`): the built-in ones (annexin V, PI:
    the roles declared ``marker``, found by their channel label) and any other channel
    named here, and how a cell is called positive. Used only where the plate has one."""

    channels: dict[str, str | int] = Field(
        default_factory=dict,
        description="more markers: name -> channel label (case-insensitive) or 0-based "
        "index, e.g. {casp3: Casp3, sytox: 4}; a list of labels names each after its label. "
        "Each MSC and donor gets <name>_mean, _sum, _positive; names are made lowercase "
        "(other characters '_'), and the plate must have the channel",
    )
    k: float = Field(
        2.0, gt=0, description="auto: noise sigmas above the lower quartile of the cells' contrast"
    )
    threshold: dict[str, float] = Field(
        default_factory=dict,
        description="per marker: the contrast (mean above background, intensity units) of a "
        "positive cell, by hand or calibrated on controls; unset: auto",
    )
    margin_um: float = Field(
        1.0, ge=0, description="2-D: margin around a donor left out of the MSC under it, µm"
    )
    window_um: float = Field(
        3.0, gt=0, description="2-D: band past the margin where the level under a donor is read, µm"
    )

    @field_validator("channels", mode="before")
    @classmethod
    def _labels_name_markers(cls, v: Any) -> Any:
        if isinstance(v, list | tuple):
            v = {str(label): label for label in v}
        for name, spec in v.items() if isinstance(v, dict) else ():
            if isinstance(spec, bool) or not isinstance(spec, str | int):
                raise ValueError(f"marker {name!r}: give a channel label or a 0-based index")
        return v

    @field_validator("channels")
    @classmethod
    def _safe_names(cls, v: dict[str, str | int]) -> dict[str, str | int]:
        out: dict[str, str | int] = {}
        given: dict[str, str] = {}
        for name, spec in v.items():
            if isinstance(spec, int) and spec < 0:
                raise ValueError(f"marker {name!r}: give a channel label or a 0-based index")
            key = schema.marker_key(name)
            problem = schema.marker_problem(key)
            if problem:
                raise ValueError(f"marker {name!r}: {problem}")
            if key in out:
                raise ValueError(
                    f"markers {given[key]!r} and {name!r} both make the columns {key}_*: "
                    "give them distinct names"
                )
            out[key], given[key] = spec, name
        return out

    @field_validator("threshold")
    @classmethod
    def _known_markers(cls, v: dict[str, float], info: ValidationInfo) -> dict[str, float]:
        known = (*schema.marker_names(), *info.data.get("channels", {}))
        out: dict[str, float] = {}
        unknown = []
        for m, t in v.items():
            out[schema.marker_key(m)] = t
            if schema.marker_key(m) not in known:
                unknown.append(m)
        if unknown:
            raise ValueError(f"unknown markers {sorted(unknown)}: the markers are {list(known)}")
        return out

    def names(self) -> tuple[str, ...]:
        """Every marker a field may measure: the built-in ones, then the config's."""
        return (*schema.marker_names(), *self.channels)


class FociDetection(_Section):
    """Options of :func:`hcsmito.stages.foci.detect_foci` (sizes in µm)."""

    foci_diameter_um: float = Field(0.6, gt=0, description="expected focus diameter, µm")
    psf_sigma_um: tuple[float, float] | None = Field(
        None, description="(z, xy) Gaussian PSF sigmas, µm (null: 0.5, 0.15)"
    )
    dog_ratio: float = Field(3.0, gt=1, description="outer / inner sigma of the DoG")
    threshold_k: float = Field(6.0, gt=0, description="threshold in robust noise sigmas")
    halo_um: float = Field(2.0, ge=0, description="exclusion margin around Jurkat bodies, µm")
    edge_margin_um: float = Field(1.0, ge=0, description="margin inside the MSC outline, µm")
    min_separation_um: float = Field(1.0, ge=0, description="distance between two peaks, µm")
    min_volume_um3: float | None = Field(
        None,
        ge=0,
        description="smallest focus, µm³ (µm² in 2-D; null: 2 voxels, or 1 by the lone-voxel rule)",
    )
    require_parent: bool = Field(True, description="drop foci whose peak is in no MSC")
    extent_fraction: float = Field(
        0.5, ge=0, lt=1, description="focus outline at this fraction of its peak (0: threshold)"
    )
    msc_top_fraction: float = Field(
        0.5,
        ge=0,
        lt=1,
        description="3-D, with the GFP given: each column's search ends where GFP falls "
        "under this share of its peak (0: the MSC mask as it is)",
    )


class TntDetection(_Section):
    """Options of :func:`hcsmito.stages.tnt.detect_tnts` (sizes in µm). Needs ``actin``."""

    tube_radius_um: tuple[float, ...] = Field(
        (0.1, 0.2, 0.35), description="tube radii matched, one scale each, µm"
    )
    psf_sigma_um: tuple[float, float] | None = Field(
        None, description="(z, xy) Gaussian PSF sigmas, µm (null: 0.5, 0.15)"
    )
    threshold_k: float = Field(7.0, gt=0, description="tubeness core threshold, noise sigmas")
    threshold_low_k: float = Field(2.5, gt=0, description="hysteresis low threshold")
    threshold_sample: int | None = Field(
        32, ge=1, description="thresholds from every n-th voxel (null: the whole field)"
    )
    contact_um: float = Field(1.0, ge=0, description="an end this close to a cell touches it, µm")
    min_length_um: float = Field(2.0, ge=0, description="shortest TNT, cell to cell, µm")
    min_height_um: float = Field(
        0.5, ge=0, description="above the glass, µm (stress fibres lie lower)"
    )
    min_clearance_um: float = Field(
        1.0, ge=0, description="the path gets this far from every cell somewhere, µm"
    )
    max_pass_um: float = Field(
        3.0, ge=0, description="longest pass near a third cell before a cut, µm"
    )
    max_steepness: float = Field(2.0, gt=0, description="rise per lateral run, end to end")
    glass_z_um: float | None = Field(None, description="glass height, µm (null: per field)")
    glass_reference_um: float | None = Field(
        None, description="plate glass height, µm (null: the runner's sample of the plate)"
    )
    glass_tolerance_um: float = Field(
        1.5, gt=0, description="a field's glass this far from the plate's falls back to it, µm"
    )
    mito_tolerance_um: float = Field(
        0.6, ge=0, description="a focus this close to the path is cargo, µm"
    )
    mito_threshold_k: float = Field(6.0, gt=0, description="cargo spot threshold, noise sigmas")
    mito_diameter_um: float = Field(0.6, gt=0, description="cargo spot diameter, µm")
    jurkat_halo_um: float = Field(
        1.0, ge=0, description="no cargo searched this close to a Jurkat body, µm"
    )
    tighten_cells: bool = Field(
        True, description="free space against cell masks cut back to their own signal"
    )


class Adhesion(_Section):
    """Options of :func:`hcsmito.stages.adhesion.measure_adhesion` (sizes in µm)."""

    contact_distance_um: float = Field(
        1.0, ge=0, description="largest gap between a Jurkat and the MSC below it, µm"
    )
    min_contact_area_um2: float = Field(
        2.0, ge=0, description="smallest contact area of an adhered Jurkat, µm²"
    )
    min_lift_um: float = Field(
        3.0, ge=0, description="contact counts this far above the glass only, µm (0: off)"
    )
    overlap_min: float = Field(
        0.5, ge=0, le=1, description="share of the Jurkat footprint over its MSC"
    )


class Readouts(_Section):
    """When an MSC counts as Red+ (either rule suffices; ``None`` disables a rule)."""

    red_positive_min_foci: int | None = Field(
        1, ge=1, description="Red+ from this many foci (null: rule off)"
    )
    red_positive_min_volume_um3: float | None = Field(
        None, gt=0, description="Red+ from this foci volume, µm³ (null: rule off)"
    )

    @model_validator(mode="after")
    def _one_rule(self) -> Readouts:
        if self.red_positive_min_foci is None and self.red_positive_min_volume_um3 is None:
            raise ValueError(
                "set red_positive_min_foci or red_positive_min_volume_um3 (both are null)"
            )
        return self


class Slurm(_Section):
    """Workers as Slurm jobs through dask-jobqueue (``--scheduler slurm``)."""

    queue: str | None = Field(None, description="partition (#SBATCH -p)")
    account: str | None = Field(None, description="account charged (#SBATCH -A)")
    cores: int = Field(8, ge=1, description="cores per job")
    processes: int = Field(1, ge=1, description="Dask worker processes per job")
    memory: str = Field("32GB", description="memory per job, e.g. 64GB")
    walltime: str = Field(
        "02:00:00", pattern=r"^(\d+-)?\d{1,2}:\d{2}:\d{2}$", description="per job, [D-]HH:MM:SS"
    )
    gpus: int = Field(0, ge=0, description="GPUs per job (#SBATCH --gres=gpu:N)")
    jobs: int = Field(1, ge=1, description="number of jobs to start")
    job_extra_directives: tuple[str, ...] = Field(
        (), description='more #SBATCH lines, e.g. ["--constraint=a100"]'
    )
    local_directory: str | None = Field(None, description="worker scratch folder on the nodes")


class QualityControl(_Section):
    """Thresholds of the per-field QC flags (:func:`hcsmito.qc.field_qc`; codes and
    meanings in :data:`hcsmito.qc.QC_FLAGS`). A flag never fails a field."""

    saturated_share: float = Field(
        1e-3, gt=0, le=1, description="saturated: share of a channel's voxels at its maximum"
    )
    empty_snr: float = Field(
        10.0, gt=0, description="empty_channel: brightest structure below this many noise sigmas"
    )
    focus_length_um: float = Field(
        1.5, gt=0, description="out_of_focus: no channel has lateral structure finer than this, µm"
    )
    vignetting_ratio: float = Field(
        0.6, gt=0, le=1, description="vignetting: background corner / centre below this"
    )
    msc_cover: float = Field(
        0.9, gt=0, le=1, description="msc_cover: MSC share of the field footprint at or above"
    )
    stack_cut_fraction: float = Field(
        0.25, gt=0, le=1, description="stack_cuts_cells: top-plane section / footprint of a cell"
    )


def _check_qc_codes(codes: tuple[str, ...]) -> tuple[str, ...]:
    from hcsmito.qc import QC_FLAGS

    unknown = [c for c in codes if c not in QC_FLAGS]
    if unknown:
        raise ValueError(f"unknown QC flags {unknown}: use codes from {', '.join(QC_FLAGS)}")
    return codes


class Statistics(_Section):
    """How fields become per-condition results (:mod:`hcsmito.aggregate`)."""

    unit: Literal["well", "field", "experiment"] = Field(
        "well", description="the replicate unit that mean ± SEM and the tests run over"
    )
    control: str = Field("DMSO", description="the condition every other is compared to")
    posthoc: Literal["tukey", "dunnett", "none"] = Field(
        "tukey", description="post-hoc test after the ANOVA"
    )
    calibrate: tuple[str, ...] | None = Field(
        None, description="negative-control conditions that calibrate red_positive"
    )
    max_share: float = Field(0.05, ge=0, le=1, description="Red+ share allowed in controls")
    calibrate_by: Literal["n_foci", "foci_volume_um3"] = Field(
        "n_foci", description="the cell readout calibrated (a count, or µm³)"
    )
    calibrate_markers: tuple[str, ...] | None = Field(
        None, description="control conditions that calibrate the marker calls (every marker)"
    )
    marker_max_share: float = Field(
        0.1, ge=0, lt=1, description="marker+ share of the control wells' cells allowed"
    )
    readouts: tuple[str, ...] | None = Field(
        None,
        description="readouts tested (names of hcsmito.aggregate.READOUTS, or "
        "pct_{jurkat,msc}_<marker>_positive of a marker markers.channels adds; null: all)",
    )
    exclude_flags: tuple[str, ...] = Field(
        (), description="fields carrying any of these QC flags are left out of the statistics"
    )

    @field_validator("exclude_flags")
    @classmethod
    def _known_flags(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _check_qc_codes(v)


class PlateThreshold(_Section):
    """One intensity threshold per plate for the cell masks, from a sample of its fields.

    HCS practice: cut every field of a plate at the same intensity, so that fields stay
    comparable (a field without cells is not cut at its own noise). For each role listed,
    the runner smooths the channel of ``sample_fields`` fields spread over the plate as the
    stage does, pools their histograms, and runs every field with ``threshold: {method:
    manual, value: ...}`` at that value. ``roles: []`` (default): each field sets its own
    thresholds.
    """

    roles: tuple[Literal["msc", "jurkat"], ...] = Field(
        (), description="masks cut at one plate threshold ([]: each field its own)"
    )
    method: HistogramMethod = Field("otsu", description="otsu | li | triangle | yen")
    sample_fields: int = Field(8, ge=1, description="fields sampled, spread over the plate")


class Resources(_Section):
    backend: Literal["auto", "cpu", "gpu"] = Field(
        "auto", description="auto: the GPU where there is one, else the CPU"
    )
    scheduler: str = Field("threads", description="threads | processes | ADDRESS | slurm")
    workers: int | None = Field(
        None, ge=1, description="Dask workers (null: the CPU count, at most 4)"
    )
    memory_per_field: int | None = Field(
        None,
        gt=0,
        description="host memory one field takes at its peak, in bytes or with a unit "
        "(6GiB, 6GB); null: estimated from the field's shape and dtype "
        "(hcsmito.cluster.field_peak_bytes); fewer fields run at once when the memory holds "
        "fewer",
    )
    slurm: Slurm = Field(default_factory=Slurm, description="Slurm jobs (--scheduler slurm)")

    @field_validator("memory_per_field", mode="before")
    @classmethod
    def _bytes(cls, v: Any) -> Any:
        """``"6GiB"``, ``"6 GB"``, ``"6e9"`` or a number of bytes."""
        if isinstance(v, bool):
            raise ValueError("give bytes or a number with a unit (6GiB, 6GB), not true / false")
        if isinstance(v, str):
            from dask.utils import parse_bytes

            try:
                return parse_bytes(v)
            except ValueError:
                raise ValueError(
                    f"{v!r} is not a size: give bytes or a number with a unit (6GiB, 6GB)"
                ) from None
        return v


class Config(BaseModel):
    """The whole run configuration (see ``conf/default.yaml``)."""

    model_config = _SECTION_CONFIG

    channels: Channels = Field(
        default_factory=Channels, description="which channel plays which role (label or index)"
    )
    input: Input = Field(
        default_factory=Input,
        description="what a field with missing chunks or NaN / Inf voxels does",
    )
    optics: Optics = Field(
        default_factory=Optics,
        description="objective and emission wavelengths, for the theoretical PSF",
    )
    deconvolution: Deconvolution = Field(
        default_factory=NoDeconvolution,
        description="method: none | richardson_lucy, before detection",
    )
    background: Background = Field(
        default_factory=Background, description="background subtraction of the detection channels"
    )
    attenuation: DepthAttenuation = Field(
        default_factory=DepthAttenuation,
        description="depth attenuation along the stack: measured, and corrected",
    )
    msc: MscSegmentation = Field(
        default_factory=MscSegmentation, description="MSC segmentation (GFP channel)"
    )
    jurkat: JurkatSegmentation = Field(
        default_factory=JurkatSegmentation,
        description="donor-cell (Jurkat) bodies from the mito channel",
    )
    nuclei: NucleiSegmentation = Field(
        default_factory=NucleiSegmentation,
        description="nuclei (nuclei channel): seeds of the cells, stain-free apoptosis call",
    )
    markers: MarkerCalls = Field(
        default_factory=MarkerCalls,
        description="per-cell markers (annexin V, PI, channels named here): when a cell is "
        "positive",
    )
    foci: FociDetection = Field(
        default_factory=FociDetection, description="transferred mitochondria (red foci) inside MSCs"
    )
    tnt: TntDetection = Field(
        default_factory=TntDetection, description="tunneling nanotubes in the actin channel"
    )
    adhesion: Adhesion = Field(
        default_factory=Adhesion, description="Jurkat bodies adhered to MSCs"
    )
    plate_threshold: PlateThreshold = Field(
        default_factory=PlateThreshold, description="one threshold per plate for the cell masks"
    )
    readouts: Readouts = Field(default_factory=Readouts, description="when an MSC counts as Red+")
    qc: QualityControl = Field(
        default_factory=QualityControl, description="thresholds of the per-field QC flags"
    )
    statistics: Statistics = Field(
        default_factory=Statistics, description="per-condition statistics (unit, control, tests)"
    )
    resources: Resources = Field(
        default_factory=Resources, description="backend, scheduler and workers"
    )
    plate_map: Path | None = Field(
        None, description="plate map CSV: well,condition[,replicate,...]; --plate-map wins"
    )

    def channel_roles(self) -> dict[str, Role]:
        """Role -> the label, index or None the config gives: every declared role
        (``channels``), then every marker the config adds (``markers.channels``)."""
        return {**self.channels.roles(), **self.markers.channels}


#: The sections of :class:`Config` that one field's computation reads.
FIELD_SECTIONS = ("optics", "deconvolution", "background", "attenuation", "msc", "jurkat",
                  "nuclei", "markers", "foci", "tnt", "adhesion", "readouts", "qc")  # fmt: skip


class _FieldSections(BaseModel):
    model_config = _SECTION_CONFIG

    @classmethod
    def of(cls, config: Config | FieldConfig) -> FieldConfig:
        """The field sections of a run configuration (the same section objects)."""
        if isinstance(config, cls):
            return config
        return cls(**{name: getattr(config, name) for name in cls.model_fields})


FieldConfig = create_model(
    "FieldConfig",
    __base__=_FieldSections,
    __doc__="The sections that one field's computation reads "
    "(:func:`hcsmito.pipeline.process_field`, :data:`FIELD_SECTIONS`), declared by "
    ":class:`Config`: not the channels, plate map, statistics or resources of the run (the "
    "caller chooses the backend).",
    __module__=__name__,
    **{
        name: (Config.model_fields[name].annotation, Config.model_fields[name])
        for name in FIELD_SECTIONS
    },  # fmt: skip
)
