"""config.check_config and config.canonical on the repo's own schema and configs, without Snakemake."""
import copy
from pathlib import Path

import pytest
import yaml

from layersweep.config import canonical, check_config
from layersweep.errors import LayersweepError

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "config.schema.yaml"


def _config(name):
    return yaml.safe_load((REPO / name).read_text())


@pytest.mark.parametrize("name", ["config.yaml", "config/demo.yaml"])
def test_shipped_configs_pass(name):
    check_config(_config(name), SCHEMA)


@pytest.mark.parametrize("section, where", [([], "(top level)"), (["metrics"], "metrics"),
                                            (["data", "synthetic"], "data.synthetic")])
def test_unknown_key_names_its_section_and_the_key(section, where):
    cfg = _config("config/demo.yaml")
    node = cfg
    for key in section:
        node = node[key]
    node["curve_pionts"] = 30  # a typo
    with pytest.raises(LayersweepError) as err:
        check_config(cfg, SCHEMA)
    msg = str(err.value)
    assert msg.startswith(f"config section '{where}' has an unknown key") and "'curve_pionts'" in msg, msg
    assert "\n" not in msg and msg.endswith(".")


def test_synthetic_data_needs_voc_root():
    cfg = _config("config/demo.yaml")
    for missing in (None, ""):
        cfg["data"]["voc_root"] = missing
        with pytest.raises(LayersweepError, match=r"^config key 'data.synthetic' needs 'data.voc_root'"):
            check_config(cfg, SCHEMA)
    del cfg["data"]["voc_root"]
    with pytest.raises(LayersweepError, match="'data.voc_root'"):
        check_config(cfg, SCHEMA)
    cfg["data"]["synthetic"] = None  # the real study's setting: no synthetic data, no voc_root needed
    check_config(cfg, SCHEMA)


def test_canonical_sorts_every_mapping_and_keeps_list_order():
    a = {"b": [{"y": 1, "x": 2}, 3], "a": {"d": None, "c": (1, 2)}}
    b = {"a": {"c": [1, 2], "d": None}, "b": [{"x": 2, "y": 1}, 3]}
    assert str(canonical(a)) == str(canonical(b)) == "{'a': {'c': [1, 2], 'd': None}, 'b': [{'x': 2, 'y': 1}, 3]}"
    assert canonical([3, 1, 2]) == [3, 1, 2]  # lists are ordered data, not sorted
    original = copy.deepcopy(a)
    canonical(a)
    assert a == original  # the config itself is not reordered in place
