"""``hcsmito demo`` on a small plate: what it prints is what the run's tables and the
generator's truth say."""

from __future__ import annotations

import pandas as pd
import pytest

from hcsmito.demo import DEMO_CONDITIONS, fate_by_condition, run_demo
from hcsmito.io.rundir import RunDir
from hcsmito.synth import read_truth

pytestmark = pytest.mark.slow


def test_demo_prints_counts_per_field_and_apoptosis_per_condition(tmp_path, capsys):
    # the demo's plate with small 2-D fields (the real one: 24 x 384 x 384)
    assert run_demo(tmp_path, backend="cpu", shape=(192, 192)) == 0
    out = capsys.readouterr().out
    plate = tmp_path / "demo.zarr"
    pm = pd.read_csv(tmp_path / "demo_platemap.csv")
    assert list(dict.fromkeys(pm["condition"])) == list(DEMO_CONDITIONS)
    assert len(pm) == 2 * len(DEMO_CONDITIONS)
    measured = RunDir(tmp_path / "results").read_table("fields")
    truth = read_truth(plate)["fields"]
    # every field, its counts next to the truth
    per_field = out.split("measured vs truth per field:")[1].split("apoptotic Jurkat")[0]
    for col in ("n_msc", "n_foci", "n_jurkat", "n_jurkat_apoptotic"):
        assert f"{col}_truth" in per_field
    assert len([ln for ln in per_field.strip().splitlines()[1:] if ln.strip()]) == len(pm)
    # per condition: annexin V+, the proxy, the truth, as the tables give them
    fate = fate_by_condition(measured, truth, pm)
    assert list(fate["condition"]) == list(DEMO_CONDITIONS)
    assert list(fate.columns) == ["condition", "n_jurkat", "% annexin V+",
                                  "% apoptotic (nuclei, proxy)", "% apoptotic (truth)"]  # fmt: skip
    table = out.split("apoptotic Jurkat cells per condition")[1]
    for _, row in fate.iterrows():
        line = next(ln for ln in table.splitlines() if ln.strip().startswith(row["condition"]))
        assert line.split()[-3:] == [f"{v:.1f}" for v in row.iloc[-3:]], line
    pooled = truth.merge(pm.rename(columns={"condition": "c"}), on="well").groupby("c")
    share = 100 * pooled["n_jurkat_apoptotic"].sum() / pooled["n_jurkat"].sum()
    assert fate.set_index("condition")["% apoptotic (truth)"].to_dict() == pytest.approx(
        share.to_dict()
    )
    # chemotherapy raises it; the generator's protection shows in the truth
    t = fate.set_index("condition")["% apoptotic (truth)"]
    assert t["ara-C"] > t["DMSO"]
    assert "report:" in out


def test_fate_by_condition_leaves_out_what_the_run_lacks():
    """A run without nuclei or markers (an older demo plate): no shares, nothing printed."""
    pm = pd.DataFrame({"well": ["B/2", "B/3"], "condition": ["DMSO", "ara-C"]})
    measured = pd.DataFrame({"well": ["B/2", "B/3"], "field": [0, 0], "n_jurkat": [10, 8],
                             "status": ["ok", "ok"]})  # fmt: skip
    truth = measured.drop(columns="status")
    fate = fate_by_condition(measured, truth, pm)
    assert list(fate.columns) == ["condition", "n_jurkat"]
    assert fate["n_jurkat"].tolist() == [10, 8]
