"""The command line, as users call it (in-process through ``main``, and one real console run)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hcsmito.cli import main
from hcsmito.config import Config, load_config


def test_config_prints_effective_config(capsys):
    assert main(["config", "--set", "foci.threshold_k=4"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert Config.model_validate(printed) == load_config(overrides=["foci.threshold_k=4"])


def test_config_schema_is_json_schema(capsys):
    assert main(["config", "--schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "foci" in schema["properties"] and schema["additionalProperties"] is False


def test_bad_config_key_is_one_clear_line(capsys):
    assert main(["config", "--set", "foci.nope=1"]) == 2
    err = capsys.readouterr().err
    assert "foci.nope: unknown key" in err and "Traceback" not in err


def test_run_on_missing_plate_says_so(tmp_path, capsys):
    code = main(["run", "--plate", str(tmp_path / "none.zarr"), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "none.zarr" in capsys.readouterr().err


def test_synth_run_status_end_to_end(tmp_path, capsys):
    plate = tmp_path / "s.zarr"
    args = ["synth", "--out", str(plate), "--wells", "B/2", "--fields", "1", "--shape", "16,96,96"]
    assert main(args) == 0
    assert (tmp_path / "s_platemap.csv").exists() and (tmp_path / "s_truth").is_dir()
    out = tmp_path / "out"
    run = ["run", "--plate", str(plate), "--out", str(out), "--backend", "cpu", "--no-progress"]
    assert main([*run, "--workers", "1"]) == 0
    assert "1 field processed, 0 up to date, 0 failed" in capsys.readouterr().out
    assert main(["status", str(out)]) == 0
    assert "1 ok" in capsys.readouterr().out
    # a corrupt field: exit code 1 and the field named
    bad = tmp_path / "bad.zarr"
    shutil.copytree(plate, bad)
    chunk = next(
        p
        for p in sorted((bad / "B" / "02" / "0" / "0").rglob("*"))
        if p.is_file() and p.name != "zarr.json"
    )
    chunk.write_bytes(b"not a chunk")
    code = main(
        [
            "run",
            "--plate",
            str(bad),
            "--out",
            str(tmp_path / "o2"),
            "--backend",
            "cpu",
            "--no-progress",
        ]
    )
    assert code == 1
    assert "B/2/0" in capsys.readouterr().err
    assert main(["status", str(tmp_path / "o2")]) == 1


def test_console_script_installed():
    exe = shutil.which("hcsmito")
    if exe is None:
        pytest.skip("the hcsmito console script is not on PATH (package not installed)")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("hcsmito ")


def test_module_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "hcsmito.cli", "info", "--backend", "cpu"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "backend: cpu" in out.stdout


def test_slurm_job_script_from_config():
    pytest.importorskip("dask_jobqueue")
    from hcsmito.cluster import slurm_cluster

    cfg = load_config(
        overrides=[
            "resources.slurm.queue=gpu",
            "resources.slurm.gpus=2",
            "resources.slurm.cores=16",
            "resources.slurm.memory=64GB",
            "resources.slurm.walltime=04:30:00",
            "resources.slurm.account=lab42",
        ]
    )
    cluster = slurm_cluster(cfg.resources.slurm)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in (
        "#SBATCH -p gpu",
        "#SBATCH --cpus-per-task=16",
        "#SBATCH -t 04:30:00",
        "#SBATCH --gres=gpu:2",
        "#SBATCH -A lab42",
    ):
        assert line in script, (line, script)
    assert "#SBATCH --mem=60G" in script
    assert "dask_worker" in script or "dask-worker" in script


def test_import_cli(tmp_path, capsys):
    import numpy as np
    import tifffile

    rng = np.random.default_rng(0)
    rows = []
    for ch in ("GFP", "MitoTracker"):
        a = rng.integers(0, 4000, (4, 32, 32), dtype=np.uint16)
        tifffile.imwrite(
            tmp_path / f"{ch}.tif",
            a,
            imagej=True,
            resolution=(10, 10),
            metadata={"spacing": 0.5, "unit": "um", "axes": "ZYX"},
        )
        rows.append({"file": f"{ch}.tif", "well": "C3", "field": 0, "channel": ch})
    pd.DataFrame(rows).to_csv(tmp_path / "files.csv", index=False)
    out = tmp_path / "imp.zarr"
    assert main(["import", str(tmp_path / "files.csv"), "--out", str(out)]) == 0
    from hcsmito.io.plate import open_plate

    img = open_plate(out).read_field("C/3", 0)
    assert img.channel_labels == ["GFP", "MitoTracker"]
    assert img.voxel_size == pytest.approx({"z": 0.5, "y": 0.1, "x": 0.1})


def test_config_documents_the_qc_thresholds_and_checks_flag_codes(capsys):
    from hcsmito.config import QualityControl, default_config_text

    text = default_config_text()
    section = text.split("\nqc:", 1)[1].split("\n\n", 1)[0]
    for key, info in QualityControl.model_fields.items():
        line = next(ln for ln in section.splitlines() if ln.strip().startswith(f"{key}:"))
        assert "#" in line, key  # value with its meaning
        assert yaml.safe_load(line.split("#")[0])[key] == info.default
    assert main(["config", "--set", "statistics.exclude_flags=[saturated, nope]"]) == 2
    err = capsys.readouterr().err
    assert "statistics.exclude_flags" in err and "nope" in err and "out_of_focus" in err


# --------------------------------------------------------------------------- issue 14.7


def _fake_run(monkeypatch, calls):
    import time

    import hcsmito.report
    import hcsmito.runner
    from hcsmito.runner import RunSummary

    def run_plate(plate, out, **kw):
        calls.append(("run", kw.get("report")))
        time.sleep(0.3)  # before the runner's clock: setting up, reading the config...
        return RunSummary(out=Path(out), processed=["B/2/0"], skipped=[], failed={}, wall_s=0.0)

    def build_report(out, **kw):
        calls.append(("report", str(out)))
        time.sleep(0.2)
        return Path(out) / "report.html"

    monkeypatch.setattr(hcsmito.runner, "run_plate", run_plate)
    monkeypatch.setattr(hcsmito.report, "build_report", build_report)


def test_run_last_line_times_the_whole_command_and_names_the_report(tmp_path, monkeypatch, capsys):
    calls = []
    _fake_run(monkeypatch, calls)
    out = tmp_path / "out"
    out.mkdir()
    assert main(["run", "--plate", "p.zarr", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert calls == [("run", False), ("report", str(out))]
    assert lines[0].startswith("building the report (1 field)")
    last = lines[-1]
    assert last.startswith("1 field processed, 0 up to date, 0 failed in ")
    assert last.endswith(f"-> {out / 'report.html'}")
    seconds = float(last.split(" in ")[1].split(" s ")[0])
    assert seconds >= 0.5  # the runner's 0 s plus the set-up and the report


def test_help_shows_defaults_and_every_scheduler(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for scheduler in ("threads", "processes", "ADDRESS", "slurm"):
        assert scheduler in text.split("--scheduler SCHEDULER")[-1].split("--workers")[0]
    assert "(default: resources.scheduler of the config, threads)" in text
    with pytest.raises(SystemExit):
        main(["synth", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "random seed (default: 0)" in text and "(default: 2)" in text


def test_verbose_after_the_subcommand(capsys):
    assert main(["config", "-v", "--set", "foci.nope=1"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "foci.nope: unknown key" in err
    assert main(["-v", "config", "--set", "foci.nope=1"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_report_control_not_in_the_plate_map_names_the_conditions(tmp_path, capsys):
    from hcsmito.io.rundir import FieldOutcome, RunDir

    rd = RunDir(tmp_path / "out")
    rd.compact([FieldOutcome("p", "B/2", 0, "failed")])
    pm = tmp_path / "map.csv"
    pd.DataFrame({"well": ["B/2", "B/3"], "condition": ["DMSO", "CytoD"]}).to_csv(pm, index=False)
    code = main(["report", str(rd.root), "--plate-map", str(pm), "--control", "dmso2"])
    err = capsys.readouterr().err
    assert code == 2 and "'dmso2' is not a condition" in err and "DMSO, CytoD" in err
    assert main(["report", str(rd.root), "--plate-map", str(pm), "--control", "CytoD"]) == 0


@pytest.mark.parametrize("well", ["AH/3", "AG/1", "B/0", "B/49"])
def test_synth_wells_must_be_on_a_standard_plate(tmp_path, capsys, well):
    plate = tmp_path / "s.zarr"
    code = main(["synth", "--out", str(plate), "--wells", f"B/2,{well}", "--shape", "8,32,32"])
    err = capsys.readouterr().err
    assert code == 2 and "on no standard plate" in err and "rows A-P, columns 1-24" in err
    assert not list(tmp_path.iterdir())


def test_messages_use_the_cli_flag_names(tmp_path, capsys):
    from hcsmito.cli import _cli_names, build_parser

    code = main(["synth", "--out", str(tmp_path / "s.zarr"), "--fields", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "--fields 0" in err and "fields=" not in err
    p = build_parser()
    msg = _cli_names(p, "import", "x.zarr exists: choose another path or set overwrite=True")
    assert msg.endswith("pass --overwrite")
    msg = _cli_names(p, "import", "voxel_size {'z': 0.0}: give positive µm; 2 channel_labels")
    assert msg.startswith("--voxel-size {") and "2 --channel-labels" in msg
    # a real import into an existing plate
    out = tmp_path / "s.zarr"
    out.mkdir()
    (out / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    import numpy as np
    import tifffile

    tifffile.imwrite(tmp_path / "a.tif", np.zeros((2, 8, 8), np.uint16))
    pd.DataFrame([{"file": "a.tif", "well": "B2", "field": 0}]).to_csv(tmp_path / "f.csv")
    capsys.readouterr()
    assert main(["import", str(tmp_path / "f.csv"), "--out", str(out), "--channel-labels",
                 "MitoTracker", "--voxel-size", "1,0.2,0.2"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "--overwrite" in err and "overwrite=" not in err


def _readme_command_rows() -> dict[str, str]:
    """README's table of commands: {subcommand: the command cell}."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = text.split("## Command line", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"\| `hcsmito (\w+)([^`]*)` \|", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def test_readme_command_table_matches_the_parser():
    """Every subcommand is in README's table, and each row names exactly the flags its
    parser takes (-v/--verbose, common to all, is documented once)."""
    import argparse
    import re

    from hcsmito.cli import build_parser

    rows = _readme_command_rows()
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(rows) == set(sub.choices), "README's command table and the parser's commands"
    common = {"--help", "--verbose"}
    for name, sp in sub.choices.items():
        flags = {o for a in sp._actions for o in a.option_strings if o.startswith("--")}
        documented = set(re.findall(r"--[a-z][a-z-]*", rows[name]))
        assert documented == flags - common, (name, sorted(flags - common), sorted(documented))


def test_synth_stack_too_short_names_the_allow_cut_flag(tmp_path, capsys):
    """Before: a stack too short for the MSCs was refused with 'or allow_cut=True', a Python
    argument synth's command line did not take. Now --allow-cut lets the stack cut the cells,
    and the refusal names it."""
    import json

    plate = tmp_path / "s.zarr"
    args = ["synth", "--out", str(plate), "--wells", "B/2", "--fields", "1", "--shape", "10,48,48"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "too short" in err and "pass --allow-cut" in err and "allow_cut" not in err
    assert not list(tmp_path.iterdir())
    assert main([*args, "--allow-cut"]) == 0
    meta = json.loads((tmp_path / "s_truth" / "synth.json").read_text())
    assert meta["params"]["allow_cut"] is True and meta["params"]["shape"][0] == 10


def test_synth_nuclei_annexin_and_fate_conditions(tmp_path, capsys):
    """--nuclei / --annexin add the Hoechst and Annexin V channels and the fate truth;
    --conditions lays conditions out one per column ('fate': synth.FATE_CONDITIONS)."""
    from hcsmito.io.plate import open_plate
    from hcsmito.synth import FATE_CONDITIONS, read_truth

    plate = tmp_path / "f.zarr"
    args = ["synth", "--out", str(plate), "--wells", "B/2,B/3,C/2", "--fields", "1",
            "--shape", "16,64,64", "--nuclei", "--annexin"]  # fmt: skip
    assert main([*args, "--conditions", "DMSO,ara-C + anti-ICAM-1"]) == 0
    pm = pd.read_csv(tmp_path / "f_platemap.csv")
    assert dict(zip(pm["well"], pm["condition"], strict=True)) == {
        "B/2": "DMSO", "B/3": "ara-C + anti-ICAM-1", "C/2": "DMSO"}  # fmt: skip
    labels = [c.lower() for c in open_plate(plate).read_field("B/2", 0).channel_labels]
    assert labels[-2:] == ["hoechst", "annexin v"]
    truth = read_truth(plate)
    assert "nuclei" in truth and "apoptotic" in truth["jurkat"]
    meta = json.loads((tmp_path / "f_truth" / "synth.json").read_text())
    assert meta["params"]["nuclear_channel"] and meta["params"]["annexin_channel"]
    # 'fate' names the protection half of the assay; an unknown condition is one line
    assert main([*args, "--conditions", "fate", "--wells", "B/2,B/3", "--overwrite"]) == 0
    pm = pd.read_csv(tmp_path / "f_platemap.csv")
    assert list(pm["condition"]) == list(FATE_CONDITIONS[:2])
    capsys.readouterr()
    assert main([*args, "--conditions", "DMSO,aspirin", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "aspirin" in err and "Traceback" not in err
    # without the flags: today's three channels
    assert main(["synth", "--out", str(tmp_path / "p.zarr"), "--wells", "B/2", "--fields", "1",
                 "--shape", "16,64,64"]) == 0  # fmt: skip
    assert len(open_plate(tmp_path / "p.zarr").read_field("B/2", 0).channel_labels) == 3


def test_a_validation_error_is_one_line_without_pydantics_link(tmp_path, capsys):
    """Before: 4 lines, the input echoed twice and a link to pydantic's docs."""
    code = main(["synth", "--out", str(tmp_path / "s.zarr"), "--shape", "4,64,64"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "every size >= 8" in err and "errors.pydantic.dev" not in err
    assert not list(tmp_path.iterdir())
