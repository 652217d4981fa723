"""config/tables.yaml (which study, method, metric and layer give each cell) and config/paper-numbers.csv (the
papers' numbers with their citation), checked against the studies before anything runs: one sentence per
problem, naming the file and the key."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from ..errors import LayersweepError

NUMBER_COLUMNS = ("paper", "table", "row", "metric", "dataset", "value", "unit", "citation")
SPEC_KEYS = ("title", "paper", "table", "dataset", "metrics", "layers", "rows")
# optional: datasets ({study: the paper's dataset its cells are compared with}, e.g. LIFT-CAM's ImageNet columns
# beside the VOC ones), pending ({study: {model, note}}: a set-up that cannot run yet; its cells stay NaN with the
# note), reference (cosine only)
COSINE = "cosine"  # LIFT-CAM Table 2's metric: computed from the attribution shards' channel weights


def load_paper_numbers(path) -> pd.DataFrame:
    """The papers' numbers: one row per (paper, table, row, metric, dataset) with its value and citation."""
    try:
        df = pd.read_csv(path, dtype={"table": str, "unit": str}, keep_default_na=False)
    except FileNotFoundError:
        raise LayersweepError(f"the papers' numbers file '{path}' does not exist.") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise LayersweepError(f"the papers' numbers file '{path}' is not a readable CSV ({type(exc).__name__}).") from None
    missing = [c for c in NUMBER_COLUMNS if c not in df.columns]
    if missing:
        raise LayersweepError(f"the papers' numbers file '{path}' has no column '{missing[0]}'.")
    values = pd.to_numeric(df["value"], errors="coerce")
    if values.isna().any():
        bad = df.loc[values.isna()].iloc[0]
        raise LayersweepError(f"the papers' numbers file '{path}' has the non-number '{bad['value']}' for "
                              f"{bad['paper']} Table {bad['table']}, row '{bad['row']}', {bad['metric']}.")
    df["value"] = values.astype(float)
    key = ["paper", "table", "row", "metric", "dataset"]
    if df.duplicated(key).any():
        bad = df.loc[df.duplicated(key)].iloc[0]
        raise LayersweepError(f"the papers' numbers file '{path}' lists {bad['paper']} Table {bad['table']}, row "
                              f"'{bad['row']}', {bad['metric']} ({bad['dataset']}) twice.")
    return df


def study_dataset(spec: dict, study: str) -> str:
    """The paper's dataset (column group) a study's cells are compared with: `datasets.<study>`, else `dataset`."""
    return (spec.get("datasets") or {}).get(study, spec["dataset"])


def paper_number(numbers: pd.DataFrame, spec: dict, row: str, metric: str, dataset: str | None = None) -> pd.Series:
    """The one line of `numbers` for a cell of a table spec (of `dataset`, default the spec's)."""
    dataset = spec["dataset"] if dataset is None else dataset
    hit = numbers[(numbers["paper"] == spec["paper"]) & (numbers["table"] == str(spec["table"]))
                  & (numbers["row"] == row) & (numbers["metric"] == metric) & (numbers["dataset"] == dataset)]
    if len(hit) != 1:
        raise LayersweepError(f"config/paper-numbers.csv has no number for {spec['paper']} Table {spec['table']}, "
                              f"row '{row}', column '{metric}' ({dataset}).")
    return hit.iloc[0]


def _layer_index(value, study: str, cfg: dict, where: str) -> int:
    from ..attribution.sites import arch_site_table

    sites = arch_site_table(cfg["model"]["arch"], cfg["model"]["source"])
    (layer,) = sites.resolve([value], key=where)
    configured = sites.resolve(cfg["attribution"]["layers"])
    if layer not in configured:
        raise LayersweepError(f"config/tables.yaml key '{where}' is layer {layer}, which study '{study}' does not "
                              f"compute (its attribution.layers: {cfg['attribution']['layers']}).")
    return layer


def load_table_specs(path, studies: dict, numbers: pd.DataFrame) -> dict:
    """{table name: spec} with each study's layer resolved to an index (`layers`) and every paper number
    looked up. `studies`: {name: full study config}."""
    try:
        specs = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise LayersweepError(f"the table specs '{path}' do not exist.") from None
    if not isinstance(specs, dict):
        raise LayersweepError(f"the table specs '{path}' hold no mapping of table names.")
    for name, spec in specs.items():
        missing = [k for k in SPEC_KEYS if not isinstance(spec, dict) or k not in spec]
        if missing:
            raise LayersweepError(f"{path} key '{name}' lacks '{missing[0]}'.")
        for study in spec["layers"]:
            if study not in studies:
                raise LayersweepError(f"{path} key '{name}.layers' names the study '{study}', which has no "
                                      f"config/studies/{study}.yaml.")
        spec["layers"] = {s: _layer_index(v, s, studies[s], f"{name}.layers.{s}") for s, v in spec["layers"].items()}
        pending = spec.setdefault("pending", {})
        for study, entry in pending.items():
            if not isinstance(entry, dict) or not entry.get("model") or not entry.get("note"):
                raise LayersweepError(f"{path} key '{name}.pending.{study}' needs a 'model' and a 'note' (why its "
                                      "cells stay empty).")
        for study in (spec.get("datasets") or {}):
            if study not in spec["layers"] and study not in pending:
                raise LayersweepError(f"{path} key '{name}.datasets' names the study '{study}', which "
                                      f"'{name}.layers' does not list.")
        for row, cell in spec["rows"].items():
            if not isinstance(cell, dict) or "method" not in cell or not cell.get("studies"):
                raise LayersweepError(f"{path} key '{name}.rows.{row}' needs a 'method' and a list 'studies'.")
            for study in cell["studies"]:
                if study not in spec["layers"] and study not in pending:
                    raise LayersweepError(f"{path} key '{name}.rows.{row}' names the study '{study}', which "
                                          f"'{name}.layers' does not list.")
                for metric in spec["metrics"]:
                    paper_number(numbers, spec, row, metric, study_dataset(spec, study))
        if COSINE in spec["metrics"].values():
            ref = spec.get("reference")
            if not isinstance(ref, dict) or ref.get("study") not in spec["layers"] or "method" not in ref:
                raise LayersweepError(f"{path} key '{name}.reference' must name a 'method' and a 'study' listed "
                                      f"in '{name}.layers' (the cosine's reference weights).")
            for study in {ref["study"], *(s for c in spec["rows"].values() for s in c["studies"])}:
                if not studies[study]["attribution"].get("store_weights"):
                    raise LayersweepError(f"{path} key '{name}' compares channel weights, but study '{study}' "
                                          "does not store them; set attribution.store_weights: true in "
                                          f"config/studies/{study}.yaml.")
    return specs
