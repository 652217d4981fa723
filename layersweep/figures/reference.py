"""The report's own per-layer numbers (report-results.json) as a long table, and their overlay on fig5/fig6."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import LayersweepError
from .inputs import add_layer_info, require_columns

log = logging.getLogger(__name__)

SHAPCAM_VOC = {"ad": 13.2, "ic": 32.7}  # Shap-CAM paper, Table 2 (VOC), layer unspecified

# The reference JSON (report-results.json): its keys -> ours.
REFERENCE_R = 0.3  # the r behind its "VGG11_Rescaling" numbers
_REF_MODELS = {"VGG11": False, "VGG11_Rescaling": True}
_REF_METHODS = {"_DeepLiftShap": "deepliftshap", "_GradCAMPlusPlus": "gradcampp"}
_REF_METRICS = {"avg_drop": "ad", "increase": "ic",
                "insertion_curve_AUC": "insertion_auc", "deletion_curve_AUC": "deletion_auc"}
REF_LABEL = "report (code)"
REF_AD_NOTE = "report (code) AD: sum over\n2-image batches, averaged,\nabout 2x the defined AD"



def load_reference(path) -> pd.DataFrame | None:
    """Per-layer values of the report's own code (report-results.json shape) as a long table.

    Columns: method, layer, metric, rescaled (bool), value. None (and one log line) when `path`
    is None or the file is absent. Note: that file's AD is about twice the defined AD.
    """
    if path is None or not Path(path).is_file():
        log.info("no reference values to overlay (%s).", "none configured" if path is None else f"{path} absent")
        return None
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LayersweepError(f"the reference file {path} is not readable JSON ({exc}).") from None
    if not isinstance(data, dict) or not any(k in data for k in _REF_MODELS):
        raise LayersweepError(f"the reference file {path} has neither of the keys {', '.join(_REF_MODELS)}.")
    records = []
    for model, rescaled in _REF_MODELS.items():
        if model not in data:
            continue
        methods = data[model]
        if not isinstance(methods, dict) or not methods:
            raise LayersweepError(f"the reference file {path} key {model!r} is not a non-empty object of methods.")
        for ref_method, layers in methods.items():
            method = _REF_METHODS.get(ref_method, ref_method.lstrip("_").lower())
            if not isinstance(layers, dict) or not layers:
                raise LayersweepError(f"the reference file {path} key {model}.{ref_method} is not a non-empty "
                                      "object of layers.")
            for name, values in layers.items():
                head, _, idx = str(name).partition(".")
                if head != "features" or not idx.isdigit():
                    raise LayersweepError(f"the reference file {path} key {model}.{ref_method} names the layer "
                                          f"{name!r}; expected 'features.i'.")
                if not isinstance(values, dict):
                    raise LayersweepError(f"the reference file {path} key {model}.{ref_method}.{name} is not an object.")
                for ref_metric, metric in _REF_METRICS.items():
                    v = values.get(ref_metric)
                    if isinstance(v, bool) or not isinstance(v, (int, float)):
                        raise LayersweepError(f"the reference file {path} key {model}.{ref_method}.{name}.{ref_metric} "
                                              f"is {'missing' if v is None else repr(v)}, not a number.")
                    records.append((method, int(idx), metric, rescaled, float(v)))
    return pd.DataFrame.from_records(records, columns=["method", "layer", "metric", "rescaled", "value"])



def select_reference(reference, rescaled: bool, rows, spec_map) -> pd.DataFrame | None:
    """The reference values for the plotted (method, layer, metric) cells only."""
    if reference is None:
        return None
    require_columns(reference, ("method", "layer", "metric", "rescaled", "value"), "reference table")
    ref = reference[reference["rescaled"].astype(bool) == rescaled]
    keys = rows[["method", "layer", "metric"]].drop_duplicates()
    ref = ref.merge(keys, on=["method", "layer", "metric"], how="inner")
    if ref.empty:
        log.info("the reference values share no method/layer/metric with this figure; nothing overlaid.")
        return None
    return add_layer_info(ref, spec_map)


def with_reference_column(df: pd.DataFrame, ref: pd.DataFrame | None) -> pd.DataFrame:
    """The CSV also carries the overlaid reference value of each cell (NaN when none is drawn)."""
    if ref is None:
        out = df.copy()
        out["reference"] = np.nan
        return out
    return df.merge(ref[["method", "layer", "metric", "value"]].rename(columns={"value": "reference"}),
                    on=["method", "layer", "metric"], how="left")


