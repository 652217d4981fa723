"""One paper table beside ours: per paper row (a method in a study) and paper column (a metric), the paper's
number, our mean with its 95% CI and n, the layer and the model. A cell we cannot fill (the study does not
run the method, or does not compute the metric yet) is NaN with a note saying why, so a table lists every
row of the paper and gains numbers as methods and metrics land."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import LayersweepError
from .spec import paper_number, study_dataset

TABLE_COLUMNS = ["table", "paper_row", "method", "study", "model", "layer", "column", "metric", "paper", "ours",
                 "ci_low", "ci_high", "n", "n_constant", "note", "citation"]


def paper_table(name: str, spec: dict, numbers: pd.DataFrame, ours: pd.DataFrame, studies: dict) -> pd.DataFrame:
    """The rows of tables/<name>.csv.

    spec: a checked entry of config/tables.yaml (load_table_specs); numbers: load_paper_numbers;
    ours: summary rows (summarize()'s columns plus `study`), plain maps only are used;
    studies: {study: {"model": str, "methods": list, "metrics": set of the metrics it computes}}.
    """
    need = {"study", "method", "layer", "metric", "mean", "ci_low", "ci_high", "n"}
    missing = sorted(need - set(ours.columns))
    if missing:
        raise LayersweepError(f"the summaries read for table '{name}' have no column '{missing[0]}'.")
    plain = ours[ours["rescale_r"].isna()] if "rescale_r" in ours.columns else ours
    rows = []
    for paper_row, cell in spec["rows"].items():
        method = cell["method"]
        for study in cell["studies"]:
            pending = (spec.get("pending") or {}).get(study)
            info = {"model": pending["model"]} if pending else studies[study]
            layer = spec["layers"].get(study, -1)  # -1: a pending set-up has no layer yet
            dataset = study_dataset(spec, study)
            for column, metric in spec["metrics"].items():
                number = paper_number(numbers, spec, paper_row, column, dataset)
                row = {"table": name, "paper_row": paper_row, "method": method, "study": study,
                       "model": info["model"], "layer": layer, "column": column, "metric": metric,
                       "paper": number["value"], "ours": np.nan, "ci_low": np.nan, "ci_high": np.nan, "n": 0,
                       "n_constant": np.nan, "note": "", "citation": f"{number['citation']}, Table {spec['table']}, "
                                                                   f"{column} ({dataset})"}
                if pending:
                    row["note"] = pending["note"]
                elif method not in info["methods"]:
                    row["note"] = f"study '{study}' does not run {method} (attribution.methods)"
                elif metric not in info["metrics"]:
                    row["note"] = f"study '{study}' does not compute the metric '{metric}' (metrics.compute)"
                else:
                    hit = plain[(plain["study"] == study) & (plain["method"] == method)
                                & (plain["layer"] == layer) & (plain["metric"] == metric)]
                    if len(hit) > 1:
                        raise LayersweepError(f"the summaries of study '{study}' hold {method}, layer {layer}, "
                                              f"metric '{metric}' {len(hit)} times.")
                    if hit.empty:
                        row["note"] = f"no value for {method} at layer {layer} in study '{study}''s summary"
                    else:
                        h = hit.iloc[0]
                        row.update(ours=h["mean"], ci_low=h["ci_low"], ci_high=h["ci_high"], n=int(h["n"]),
                                   n_constant=h.get("n_constant", np.nan))
                        no_value = h.get("n_no_value", np.nan)
                        no_value = int(no_value) if pd.notna(no_value) else 0
                        if no_value > 0:
                            row["note"] = (f"{no_value} samples left out: no value (the pointing game: the "
                                           "explained class has no box in the image)")
                        elif int(h["n"]) == 0:
                            row["note"] = "every map was constant (no value)"
                rows.append(row)
    out = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    out["n"] = out["n"].astype(int)
    return out
