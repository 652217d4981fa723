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


def _attribution(layers="all", attribute_to="output", **options):
    return {"layers": layers, "attribute_to": attribute_to, "options": options}


def test_method_layers_are_checked_against_the_arch_and_the_method():
    """check_method_layers: a method's own list (or attribution.layers) against model.arch's sites (range)
    and the method's layer kinds (FullGrad: conv layers), each problem one sentence naming key and value."""
    from layersweep.attribution.sites import arch_site_table
    from layersweep.config import check_method_layers

    vgg11, vgg16 = arch_site_table("vgg11"), arch_site_table("vgg16")
    vgg11_bn = arch_site_table("vgg11_bn")
    # the method's own list wins over attribution.layers; 'all' is every module of the arch
    assert check_method_layers(_attribution(scorecam={"layers": [20, "features.2"]}), "scorecam", vgg11) == [2, 20]
    assert check_method_layers(_attribution(), "gradcam", vgg16) == list(range(31))
    assert check_method_layers(_attribution([25]), "gradcam", vgg16) == [25]
    with pytest.raises(LayersweepError) as err:
        check_method_layers(_attribution(scorecam={"layers": [2, 25]}), "scorecam", vgg11)
    assert str(err.value) == ("config key 'attribution.options.scorecam.layers' names layer 25 (outside -1..20: the "
                              "model has 21 sites; -1 is the model input).")
    with pytest.raises(LayersweepError, match=r"^config key 'attribution.layers' names layer 25 \(outside -1..20"):
        check_method_layers(_attribution([25]), "gradcam", vgg11)
    # FullGrad is defined at conv layers (and the input) only
    assert check_method_layers(_attribution(fullgrad={"layers": [0, 3, 18]}), "fullgrad", vgg11) == [0, 3, 18]
    assert check_method_layers(_attribution(fullgrad={"layers": [0, 4, 8]}), "fullgrad", vgg11_bn) == [0, 4, 8]
    with pytest.raises(LayersweepError) as err:
        check_method_layers(_attribution(fullgrad={"layers": [3, 4]}), "fullgrad", vgg11)
    assert str(err.value) == ("config key 'attribution.options.fullgrad.layers' names layer 4 (features.4, a relu) "
                              "for method 'fullgrad', which is defined only at layers of kind conv or batchnorm or input; list "
                              "only such layers in 'attribution.options.fullgrad.layers'.")
    # a BatchNorm's shift is a bias term too (pytorch-grad-cam's FullGrad takes it)
    assert check_method_layers(_attribution(fullgrad={"layers": [0, 1]}), "fullgrad", vgg11_bn) == [0, 1]
    with pytest.raises(LayersweepError, match=r"^config key 'attribution.options.fullgrad.layers' names layer 2 "
                                              r"\(features.2, a relu\)"):
        check_method_layers(_attribution(fullgrad={"layers": [0, 2]}), "fullgrad", vgg11_bn)
    with pytest.raises(LayersweepError) as err:  # no list of its own: attribution.layers is named
        check_method_layers(_attribution("all"), "fullgrad", vgg11)
    assert str(err.value).startswith("config key 'attribution.layers' names layer 1 (features.1, a relu) for method "
                                     "'fullgrad'") and str(err.value).endswith(
        "give it its own list in 'attribution.options.fullgrad.layers'.")
    # attribute_to: input puts layer l's map on the output of l - 1 (layer 0: the model input)
    assert check_method_layers(_attribution([0, 4], "input"), "fullgrad", vgg11) == [0, 4]
    with pytest.raises(LayersweepError, match=r"names layer 3 \(the input of layer 3, i\.e\. features\.2, a maxpool\)"):
        check_method_layers(_attribution([3], "input"), "fullgrad", vgg11)


def test_demo_runs_every_method_and_limits_the_expensive_ones():
    """make demo runs every registered method; the perturbation methods (thousands of forwards per crop) at a
    few layers of their own, each a layer the method is defined at in the demo's arch."""
    from layersweep.attribution import available_methods
    from layersweep.attribution.sites import arch_site_table
    from layersweep.config import check_method_layers

    cfg = _config("config/demo.yaml")
    attribution = cfg["attribution"]
    assert sorted(attribution["methods"]) == available_methods()
    features = arch_site_table(cfg["model"].get("arch", "vgg11"))
    for method in ("ablationcam", "shapcam_pi", "shapcam", "scorecam"):
        assert len(check_method_layers(attribution, method, features)) <= 2, method
    for method in attribution["methods"]:
        check_method_layers(attribution, method, features)
