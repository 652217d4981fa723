"""AttributionShard: the typed shard, read and written in layersweep/attribution/shards.py only (the format's own
round trip and errors are in test_attribution_api.py)."""
import numpy as np
import pytest

from layersweep.attribution.shards import AttributionShard, as_attribution_shard, read_attribution_shard
from layersweep.errors import LayersweepError


def _shard(n=3):
    rng = np.random.default_rng(2)
    return AttributionShard(method="gradcam", crop_id=np.array([f"c{i}" for i in range(n)]),
                            target=np.arange(n), maps={5: rng.normal(size=(n, 4, 4)), -1: rng.normal(size=(n, 8, 8))},
                            logit=rng.normal(size=n), prob=rng.uniform(size=n),
                            weights={5: rng.normal(size=(n, 7))})


def test_round_trip_keeps_every_field_and_an_extra_array(tmp_path):
    shard = _shard()
    shard.extra["sites"] = np.array(["features.5", "input"])  # a per-shard array the readers do not know yet
    shard.write(tmp_path / "s.npz", "float16")
    back = read_attribution_shard(tmp_path / "s.npz")
    assert back.method == "gradcam" and back.crop_ids == ["c0", "c1", "c2"] and back.layers == [-1, 5]
    assert back.target.dtype == np.int64 and back.logit.dtype == np.float32 and back.maps[5].dtype == np.float16
    np.testing.assert_allclose(back.maps[-1], shard.maps[-1], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(back.weights[5], shard.weights[5], rtol=1e-6)
    assert list(back.extra) == ["sites"] and list(back.extra["sites"]) == ["features.5", "input"]
    assert str(tmp_path / "s.npz") in back.name and len(back) == 3
    back.write(tmp_path / "t.npz")  # written back as it was read: the extra array too
    assert list(read_attribution_shard(tmp_path / "t.npz").extra) == ["sites"]


def test_a_mapping_of_arrays_goes_through_the_same_checks():
    arrays = _shard().to_arrays()
    assert as_attribution_shard(arrays).layers == [-1, 5]
    shard = as_attribution_shard(arrays)
    assert as_attribution_shard(shard) is shard
    assert shard["maps"] is shard.maps and list(shard["layers"]) == [-1, 5]  # the former dict's keys
    for key, value, match in (("crop_id", np.array(["a", "a", "b"]), "lists a crop twice"),
                              ("target", np.array([0.5, 1, 2]), "'target' must hold 3 integers"),
                              ("prob", np.zeros(2), "'prob' has shape"),
                              ("map_5", np.zeros((2, 4, 4)), "'map_5' must be a float array")):
        with pytest.raises(LayersweepError, match=match):
            AttributionShard.from_arrays({**arrays, key: value})
    with pytest.raises(LayersweepError, match="lacks the key 'map_5'"):
        AttributionShard.from_arrays({k: v for k, v in arrays.items() if k != "map_5"})


def test_an_extra_array_may_not_take_a_shard_key(tmp_path):
    shard = _shard()
    shard.extra["map_7"] = np.zeros(3)
    with pytest.raises(LayersweepError, match="extra array 'map_7'"):
        shard.write(tmp_path / "s.npz")
    assert not (tmp_path / "s.npz").exists()
