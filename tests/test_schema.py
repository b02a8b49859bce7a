"""The one declaration of roles and tables (hcsmito.schema) and everything that reads it."""

import subprocess
import sys
import textwrap

import pandas as pd

from hcsmito import schema
from hcsmito.config import Config, load_config


def test_every_table_keeps_its_declared_columns_when_empty():
    for name, table in schema.TABLES.items():
        df = schema.empty_table(name)
        assert len(df) == 0
        assert {c: str(t) for c, t in df.dtypes.items()} == {
            c: str(pd.Series(dtype=t).dtype) for c, t in table.dtypes.items()
        }, name
        keyed = schema.empty_table(name, keys=True)
        assert list(keyed.columns[:3]) == ["plate", "well", "field"]
        if table.id_column is not None:
            assert table.id_column in table.dtypes, name


def test_roles_reach_the_config():
    cfg = load_config()
    assert list(cfg.channels.roles()) == list(schema.role_names())
    assert cfg.optics.emission_um == {r.name: r.emission_um for r in schema.ROLES}
    props = Config.model_json_schema()["$defs"]["Channels"]["properties"]
    assert list(props) == list(schema.role_names())


# A role and a table added through the declaration alone, before anything else of hcsmito
# is imported (the config reads the roles on import): the run finds the channel by its
# pattern, writes it to labels.zarr in its colour, writes and compacts the table (empty:
# no stage fills it, so it carries its declared columns) and the aggregation reads it.
_THROWAWAY = r"""
import json, sys
from pathlib import Path
import numpy as np
import pandas as pd

from hcsmito import schema
schema.ROLES = schema.ROLES + (
    schema.Role("farred", "cy5|far-red", 0.67, "FF00FF", doc="a far-red dye"),
)
schema.TABLES["spots"] = schema.Table(
    "spots",
    (schema.Column("spot_id", "int32"), schema.Column("volume_um3", "float64", "µm³")),
    id_column="spot_id",
)

from hcsmito.aggregate import read_tables
from hcsmito.config import Config, load_config
from hcsmito.io.plate import open_plate
from hcsmito.io.writer import create_plate, write_image
from hcsmito.runner import run_plate
from hcsmito.synth import CHANNEL_LABELS, SynthParams, generate_field

tmp = Path(sys.argv[1])
props = Config.model_json_schema()["$defs"]["Channels"]["properties"]
assert "farred" in props, props
assert load_config().optics.emission_um["farred"] == 0.67

f = generate_field(SynthParams(shape=(14, 96, 96), n_msc=2, n_jurkat=1), seed=2)
image = np.concatenate([f.image, f.image[:1] // 2])  # a fourth channel
plate = tmp / "p.zarr"
create_plate(plate, wells=["B/2"], fields_per_well=1)
labels = [*CHANNEL_LABELS, "Cy5"]
write_image(plate, "B/2", 0, image, axes="czyx",
            voxel_size=f.voxel_size, channel_labels=labels)

out = tmp / "out"
s = run_plate(plate, out, scheduler="threads", workers=1, backend="cpu", progress=False)
assert s.ok, s.failed

got = open_plate(out / "labels.zarr").read_field("B/2", 0)
assert got.channel_labels == labels, got.channel_labels
(meta_path,) = (out / "labels.zarr").glob("B/*/0/zarr.json")
meta = json.loads(meta_path.read_text())
colors = [c["color"] for c in meta["attributes"]["ome"]["omero"]["channels"]]
assert colors[-1] == "FF00FF", colors

df = pd.read_parquet(out / "tables" / "spots.parquet")
assert list(df.columns) == ["plate", "well", "field", "spot_id", "volume_um3"], df.columns
assert str(df["spot_id"].dtype) == "int32" and len(df) == 0
assert "spots" in read_tables(out)
trends = pd.read_parquet(out / "tables" / "trends.parquet")  # one day: no trend rows
assert list(trends.columns) == list(schema.TABLES["trends"].dtypes), trends.columns
print("OK")
"""


def test_a_role_and_a_table_added_by_declaration_alone(tmp_path):
    script = tmp_path / "throwaway.py"
    script.write_text(textwrap.dedent(_THROWAWAY))
    res = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=280
    )
    assert res.returncode == 0 and "OK" in res.stdout, res.stdout[-2000:] + res.stderr[-4000:]
