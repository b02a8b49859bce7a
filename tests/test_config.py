"""The configuration: defaults, variants, overrides and the errors users see."""

from pathlib import Path

import pytest
import yaml

from hcsmito.config import Config, ConfigError, config_hash, load_config
from hcsmito.stages.adhesion import measure_adhesion
from hcsmito.stages.foci import detect_foci
from hcsmito.stages.segmentation import segment_jurkat, segment_msc, segment_nuclei
from hcsmito.stages.threshold import (
    AutoThreshold,
    HistogramThreshold,
    ManualThreshold,
    as_threshold,
)
from hcsmito.stages.tnt import detect_tnts

ROOT = Path(__file__).resolve().parents[1]


def test_default_yaml_is_the_model_defaults():
    # conf/default.yaml spells out every default: it must agree with the models
    assert load_config() == Config()


@pytest.mark.parametrize("path", sorted((ROOT / "conf").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)


def test_variant_changes_only_what_it_says():
    cfg = load_config(ROOT / "conf" / "deconvolve.yaml")
    assert cfg.deconvolution.method == "richardson_lucy"
    assert cfg.foci == Config().foci


@pytest.mark.parametrize(
    ("section", "func"),
    [
        ("msc", segment_msc),
        ("jurkat", segment_jurkat),
        ("nuclei", segment_nuclei),
        ("foci", detect_foci),
        ("tnt", detect_tnts),
        ("adhesion", measure_adhesion),
    ],
)
def test_stage_sections_match_stage_signatures(section, func):
    import inspect

    params = inspect.signature(func).parameters
    fields = Config.model_fields[section].annotation.model_fields
    pipeline_own = Config.model_fields[section].annotation().stage_kwargs().keys() ^ fields.keys()
    for name, f in fields.items():
        if name in pipeline_own:  # options of the pipeline (whether and how it runs the stage)
            continue
        assert name in params, f"{section}.{name} is not an option of {func.__name__}"
        stage_default = params[name].default
        if name == "threshold":  # the stage reads "auto" as the option with its defaults
            stage_default = as_threshold(stage_default)
        default = f.get_default(call_default_factory=True)
        assert stage_default == default, f"{section}.{name} default differs"
    # every option of the stage is in the config (the arrays are passed by the pipeline)
    arrays = {
        "voxel_size",
        "msc_labels",
        "jurkat_labels",
        "foci_labels",
        "mito",
        "glass_channels",
        "msc_signal",
        "seeds",
        "mito_spots",
    }
    options = {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY} - arrays
    assert options <= set(fields), f"not in config section {section}: {options - set(fields)}"


def test_overrides_are_yaml_values():
    cfg = load_config(overrides=["foci.threshold_k=4.5", "channels.mito=1", "channels.msc=GFP"])
    assert cfg.foci.threshold_k == 4.5 and cfg.channels.mito == 1 and cfg.channels.msc == "GFP"


def test_tagged_union_switch_by_override():
    cfg = load_config(overrides=["deconvolution.method=richardson_lucy"])
    assert cfg.deconvolution.iterations == 10


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("foci.thresh=3", r"foci\.thresh: unknown key; allowed here: .*threshold_k"),
        ("msc.threshold_method=mean", r"msc\.threshold_method: .*'otsu'.*got 'mean'"),
        ("foci.threshold_k=-1", r"foci\.threshold_k: .*greater than 0"),
        ("deconvolution.method=wiener", r"deconvolution\.method: .*'none', 'richardson_lucy'"),
        (
            "deconvolution.iterations=0",
            r"deconvolution\.iterations: unknown key; allowed here: method$",
        ),
        ("msc.threshold.method=mean", r"msc\.threshold\.method: .*'otsu'.*got 'mean'"),
        ("msc.threshold.value=3", r"msc\.threshold\.value: unknown key; allowed here: method, k"),
        ("jurkat.threshold.k=0", r"jurkat\.threshold\.k: .*greater than 0"),
        ("bogus.key=1", r"bogus: unknown key; allowed here: channels"),
        ("resources.slurm.walltime=2h", r"resources\.slurm\.walltime"),
        ("foci.threshold_k", r"expected key\.path=value"),
    ],
)
def test_errors_name_the_key_and_allowed_values(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_threshold_is_one_tagged_option():
    cfg = load_config()
    assert cfg.msc.threshold == AutoThreshold(k=5.0, fraction=0.3)
    assert cfg.msc.stage_kwargs()["threshold"] is cfg.msc.threshold  # typed, to the stage
    # a new method starts afresh: the k and fraction of auto do not follow it
    cfg = load_config(overrides=["msc.threshold.method=manual", "msc.threshold.value=120"])
    assert cfg.msc.threshold == ManualThreshold(value=120.0)
    cfg = load_config(overrides=["jurkat.threshold.method=li"])
    assert cfg.jurkat.threshold == HistogramThreshold(method="li")
    assert cfg.msc.threshold == AutoThreshold()
    with pytest.raises(ConfigError, match=r"msc\.threshold\.value: Field required"):
        load_config(overrides=["msc.threshold.method=manual"])


@pytest.mark.parametrize(
    ("flat", "nested"),
    [
        (["msc.threshold_k=7"], {"method": "auto", "k": 7.0, "fraction": 0.3}),
        (["msc.threshold_method=otsu", "msc.threshold_k=7"], {"method": "otsu"}),
        (
            ["msc.threshold_method=manual", "msc.threshold_value=9"],
            {"method": "manual", "value": 9},
        ),
        (["msc.threshold_value=9"], {"method": "manual", "value": 9}),  # was ignored silently
    ],
)
def test_flat_threshold_keys_are_migrated_with_a_warning(flat, nested, caplog):
    with caplog.at_level("WARNING", logger="hcsmito.config"):
        cfg = load_config(overrides=flat)
    assert cfg.msc.threshold == as_threshold(nested)
    (rec,) = caplog.records
    assert "\n" not in rec.getMessage() and "deprecated msc.threshold_" in rec.getMessage()


def test_flat_threshold_keys_in_a_file(tmp_path, caplog):
    conf = tmp_path / "old.yaml"
    conf.write_text("jurkat:\n  threshold_method: manual\n  threshold_value: 300\n")
    with caplog.at_level("WARNING", logger="hcsmito.config"):
        cfg = load_config(conf)
    assert cfg.jurkat.threshold == ManualThreshold(value=300.0)
    assert cfg.msc.threshold == AutoThreshold()
    assert "jurkat.threshold_method, jurkat.threshold_value" in caplog.text
    conf.write_text("jurkat:\n  threshold_method: manual\n  threshold_value: -.inf\n")
    with pytest.raises(ConfigError, match=r"old\.yaml\): jurkat\.threshold_value: .*finite"):
        load_config(conf)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("foci: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text(yaml.safe_dump(["a", "b"]))
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_config(bad)


def test_config_hash_follows_content():
    assert config_hash(load_config()) == config_hash(Config())
    assert config_hash(load_config(overrides=["foci.threshold_k=7"])) != config_hash(Config())


def test_config_hash_ignores_how_a_run_is_carried_out():
    """Workers, memory, scheduler and statistics do not change a field's results: a resumed
    run with other resources must not redo every field (it did: the hash covered them)."""
    base = config_hash(Config())
    for item in ("resources.workers=7", "resources.memory_per_field=6GiB",
                 "resources.scheduler=processes", "statistics.unit=field"):  # fmt: skip
        assert config_hash(load_config(overrides=[item])) == base, item
    assert config_hash(load_config(overrides=["tnt.min_length_um=3"])) != base


# --------------------------------------------------------------------------- shipped configs


def test_shipped_config_by_name_from_any_folder(tmp_path, monkeypatch, capsys):
    """Before: ``--config deconvolve`` was a file name: 'config file deconvolve does not
    exist' outside the repository's conf/ folder."""
    from hcsmito.cli import main

    monkeypatch.chdir(tmp_path)  # no conf/ here
    for name in ("deconvolve", "mito-only", "default"):
        assert load_config(name) == load_config(ROOT / "conf" / f"{name}.yaml")
    assert load_config("deconvolve").deconvolution.method == "richardson_lucy"
    assert main(["config", "--config", "deconvolve"]) == 0
    assert "richardson_lucy" in capsys.readouterr().out
    # a file of that name in the working folder is still the file
    (tmp_path / "deconvolve").write_text("foci: {threshold_k: 9}\n")
    assert load_config("deconvolve").foci.threshold_k == 9


def test_unknown_config_name_is_one_line_listing_the_shipped_ones(tmp_path, monkeypatch, capsys):
    from hcsmito.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_config("deconvolved")
    msg = str(err.value)
    assert "\n" not in msg
    assert "'deconvolved' is neither a file nor a shipped config" in msg
    assert "deconvolve, default, mito-only" in msg
    assert main(["config", "--config", "nope"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "one of deconvolve, default, mito-only" in lines[0]
    # a path (a suffix or a folder) stays a missing file, and says what the names are
    with pytest.raises(ConfigError, match=r"config file nope\.yaml does not exist \(shipped"):
        load_config("nope.yaml")


# --------------------------------------------------------------------------- documented options


def _section_models(annotation) -> list[type]:
    """The pydantic models inside an annotation (a section, a tagged union, Optional...)."""
    import typing

    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _section_models(arg)]


def _options(model, path=()):
    """``(path, field)`` of every option of the schema; the options of each member of a
    tagged union (a deconvolution, a threshold method, a PSF) under the union's key."""
    for name, field in model.model_fields.items():
        yield (*path, name), field
        for sub in _section_models(field.annotation):
            yield from _options(sub, (*path, name))


OPTIONS = sorted({".".join(p): f for p, f in _options(Config)}.items())


def test_the_walk_sees_every_kind_of_option():
    keys = {k for k, _ in OPTIONS}
    assert {"plate_map", "tnt.tighten_cells", "resources.slurm.walltime"} <= keys
    assert {"deconvolution.iterations", "deconvolution.psf.voxel_size_um"} <= keys
    assert {"msc.threshold.value", "jurkat.threshold.fraction", "channels.actin"} <= keys
    assert len(keys) > 100


@pytest.mark.parametrize(("key", "field"), OPTIONS, ids=[k for k, _ in OPTIONS])
def test_every_option_has_a_description_with_its_unit(key, field):
    """Before: 74 options of the schema had no description (``hcsmito config --schema``)."""
    assert field.description and len(field.description) > 8, f"{key}: no description"
    name = key.rsplit(".", 1)[-1]
    for suffix, unit in (("_um", "µm"), ("_um2", "µm²"), ("_um3", "µm³")):
        if name.endswith(suffix):
            assert unit in field.description, f"{key}: the description names no {unit}"


def _top_blocks(text: str) -> dict[str, str]:
    """default.yaml's text per top-level section (its key's line and what follows)."""
    blocks: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            key = line.split(":", 1)[0]
        if key is not None:
            blocks[key] = blocks.get(key, "") + line + "\n"
    return blocks


@pytest.mark.parametrize(("key", "field"), OPTIONS, ids=[k for k, _ in OPTIONS])
def test_default_yaml_lists_every_option_with_a_comment(key, field):
    """Before: conf/default.yaml listed 60 of the schema's options. Each is there, with a
    comment (unit and meaning) on its line; an option of a choice not taken (the
    Richardson-Lucy options, a manual threshold's value) is listed commented out."""
    import re

    from hcsmito.config import default_config_text

    blocks = _top_blocks(default_config_text())
    top, name = key.split(".")[0], key.split(".")[-1]
    assert top in blocks, f"{top}: no section in conf/default.yaml"
    line = re.compile(rf"^\s*(?:#\s*)?{re.escape(name)}:[^#\n]*#\s*\S", re.M)
    assert line.search(blocks[top]), f"{key}: not in conf/default.yaml with a comment"


def test_markers_the_config_names_become_safe_column_names():
    cfg = load_config(overrides=["markers.channels=[Casp3, SYTOX Green]",
                                 "markers.threshold={SYTOX Green: 25}"])  # fmt: skip
    # names made as schema.marker_key says: lowercase, other characters "_"
    assert cfg.markers.channels == {"casp3": "Casp3", "sytox_green": "SYTOX Green"}
    assert cfg.markers.threshold == {"sytox_green": 25.0}
    assert cfg.markers.names() == ("annexin", "pi", "casp3", "sytox_green")
    roles = cfg.channel_roles()
    assert roles["casp3"] == "Casp3" and roles["sytox_green"] == "SYTOX Green"
    assert list(roles)[:6] == list(cfg.channels.roles())
    assert load_config(overrides=["markers.channels={casp3: 4}"]).markers.channels == {"casp3": 4}
    assert Config().channel_roles() == Config().channels.roles()  # no entry: the roles alone


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "markers.channels={annexin: Casp3}",
            r"'annexin' is a built-in marker: .*channels\.annexin",
        ),
        ("markers.channels={nuclei: Casp3}", r"'nuclei' is a built-in channel role"),
        ("markers.channels={Red: Casp3}", r"column 'red_positive' is a column of the cells table"),
        ("markers.channels={3x: Casp3}", r"marker '3x': a marker name needs a letter first"),
        (
            "markers.channels=[Casp-3, casp 3]",
            r"'Casp-3' and 'casp 3' both make the columns casp_3_",
        ),
        ("markers.channels={casp3: true}", r"marker 'casp3': give a channel label or a 0-based"),
        ("markers.channels={casp3: -1}", r"marker 'casp3': give a channel label or a 0-based"),
        ("markers.threshold={casp3: 5}", r"unknown markers \['casp3'\]: the markers are"),
    ],
)
def test_a_marker_name_that_cannot_be_columns_is_one_clear_error(override, message):
    with pytest.raises(ConfigError, match=r"markers\.(channels|threshold): .*" + message) as err:
        load_config(overrides=[override])
    assert "\n" not in str(err.value)
