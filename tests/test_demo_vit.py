"""The ViT demo (config/demo-vit.yaml: `vit_tiny` on 32-px synthetic crops) through the normal rules, end to end.

Checks what is particular to a transformer: named sites on the shards, every site marked
`deeplift_rules: gradient_fallback`, the last block's zero maps warned about in the attribution log, and fig4
skipped with its one sentence.
"""
from __future__ import annotations

import shutil

import pandas as pd
import pytest

from layersweep.attribution import read_attribution_shard
from workflow import PROJECT_FILES, REPO, snakemake

pytestmark = pytest.mark.slow
CONFIG = "config/demo-vit.yaml"


@pytest.fixture(scope="module")
def vit_demo(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo_vit")
    for name in PROJECT_FILES:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, work / name)
    snakemake(work, "--configfile", CONFIG)
    return work


def test_vit_demo_runs_every_figure(vit_demo):
    for n in (2, 3, 4, 5, 6, 7):
        assert (vit_demo / "figures" / f"fig{n}.pdf").is_file(), n
    atlas = pd.read_csv(vit_demo / "figures" / "tables" / "atlas.csv")
    assert "encoder.layers.encoder_layer_0.ln_1" in set(atlas["name"])  # the ViT's sites, not VGG11's


def test_vit_demo_shards_mark_the_deeplift_fallback(vit_demo):
    shards = vit_demo / "results" / "attributions"
    dls = read_attribution_shard(next((shards / "deepliftshap").glob("shard-*.npz")))
    assert dls.extra["deeplift_rules"].tolist() == ["gradient_fallback"] * 4
    assert sorted(dls.maps) == [0, 1, 2, 3] and dls.maps[0].shape[1:] == (4, 4)  # the 4 x 4 patch grid
    cam = read_attribution_shard(next((shards / "gradcampp").glob("shard-*.npz")))
    assert dls.extra["site_name"][0] == "encoder.layers.encoder_layer_0.ln_1"
    assert not cam.maps[3].any()  # the last block's patch tokens: zero gradient under class-token pooling
    logs = "".join(p.read_text() for p in (vit_demo / "logs").rglob("*.log") if "attribution" in p.as_posix())
    assert "constant map at encoder.layers.encoder_layer_1" in logs


def test_vit_demo_fig4_is_skipped_with_one_sentence(vit_demo):
    table = pd.read_csv(vit_demo / "figures" / "tables" / "fig4.csv")
    assert table["skipped"].tolist() == [True]
    assert table["reason"][0].startswith("Fig. 4 is skipped for vit_tiny: self-attention")
