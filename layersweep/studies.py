"""The papers' set-ups as studies: each config/studies/<name>.yaml states what differs from config.yaml (the
report's study), and runs as a Snakemake module whose outputs live below studies/<name>/.

A study file is merged over config.yaml, key by key (lists and scalars replace, dicts merge), so it reads as
the set-up's differences; it must state its own model, data and methods (REQUIRED_KEYS), so that a change of
the report study's defaults cannot silently change a paper's set-up.
"""
from __future__ import annotations

import copy
import os
import re
from pathlib import Path

import yaml

from .config import load_yaml
from .errors import LayersweepError

# What defines a set-up: every study file states these itself.
REQUIRED_KEYS = ("model.arch", "model.source", "data.samples", "data.n_images", "attribution.methods",
                 "attribution.layers")
# Output directories of the pipeline that a study moves below studies/<name>/; resources/ (the VOC archives and
# the weights) stays shared, downloaded once by the report study's rules.
STUDY_DIRS = ("results/", "figures/", "logs/", "benchmarks/")
NAME = re.compile(r"^[a-z][a-z0-9-]*$")


def merge(base: dict, over: dict) -> dict:
    """`over` on top of `base`: dicts merge recursively, anything else replaces (a copy; inputs untouched)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_yaml(path: Path) -> dict:
    try:
        data = load_yaml(path.read_text())
    except FileNotFoundError:
        raise LayersweepError(f"the study config '{path}' does not exist.") from None
    except yaml.YAMLError as exc:
        raise LayersweepError(f"the study config '{path}' is not valid YAML ({type(exc).__name__}).") from None
    if not isinstance(data, dict):
        raise LayersweepError(f"the study config '{path}' holds no mapping of config keys.")
    return data


def _has(cfg: dict, dotted: str) -> bool:
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def module_name(name: str) -> str:
    """The Snakemake module (and rule-name prefix) of a study: a Python identifier."""
    return name.replace("-", "_")


def study_prefix(name: str) -> str:
    return f"studies/{name}/"


def study_config(path: str | Path, base_path: str | Path, schema_path: str | Path | None = None) -> dict:
    """The full config of the study in `path`: config.yaml (`base_path`) with the study's keys on top, checked
    against the schema when `schema_path` is given. A missing required key or a bad value is one sentence
    naming the study file."""
    from .config import check_config

    path = Path(path)
    name = path.stem
    if not NAME.match(name):
        raise LayersweepError(f"the study config '{path}' has a name that is not lower-case letters, digits and "
                              "dashes; rename the file (its name is the study's directory below studies/).")
    own = _read_yaml(path)
    missing = [k for k in REQUIRED_KEYS if not _has(own, k)]
    if missing:
        raise LayersweepError(f"the study config '{path}' lacks the key '{missing[0]}'; a study states its "
                              f"model, data and methods itself ({', '.join(REQUIRED_KEYS)}).")
    cfg = merge(_read_yaml(Path(base_path)), own)
    methods = list(cfg["attribution"]["methods"])
    if not _has(own, "figures.compare") and not set(cfg["figures"].get("compare", [])) <= set(methods):
        # fig7's pair defaults to the study's own first two methods (a one-method study has no fig7); the
        # tables do not use it
        cfg["figures"]["compare"] = methods[:2] if len(methods) > 1 else None
    if schema_path is not None:
        try:
            check_config(cfg, schema_path)
        except LayersweepError as exc:
            raise LayersweepError(f"the study config '{path}': {exc}") from None
    return cfg


def load_studies(studies_dir: str | Path, base_path: str | Path, schema_path: str | Path | None = None) -> dict:
    """{name: full config} of every config/studies/*.yaml, sorted by name."""
    return {p.stem: study_config(p, base_path, schema_path) for p in sorted(Path(studies_dir).glob("*.yaml"))}


def replace_prefix(name: str) -> dict:
    """The module's `replace_prefix`: the pipeline's output directories below studies/<name>/."""
    return {d: study_prefix(name) + d for d in STUDY_DIRS}


def check_synthetic_roots(studies: dict, main_root: str) -> None:
    """A study with synthetic data writes it to its own data.voc_root: the report study's synthetic_voc rule
    writes `main_root`, and two rules may not write one directory."""
    taken = {str(Path(main_root)): "the report study"}
    for name, cfg in studies.items():
        if not cfg["data"].get("synthetic"):
            continue
        root = str(Path(cfg["data"]["voc_root"]))
        if root in taken:
            raise LayersweepError(f"the study config 'config/studies/{name}.yaml' writes its synthetic VOC to "
                                  f"data.voc_root '{root}', as {taken[root]} does; give it a directory of its own.")
        taken[root] = f"study '{name}'"


# the rules of rules/tables.smk: a job of one of them needs the studies too
TABLE_RULES = ("tables", "paper_table", "table_cosine")
LOAD_STUDIES_ENV = "LAYERSWEEP_STUDIES"


def studies_requested(argv: list[str], names, environ=None) -> bool:
    """Whether the snakemake command line `argv` asks for something of the studies: a target below studies/
    or tables/ (or the rule `tables`), or, as a cluster job runs, `--target-jobs` of a study's or a table's
    rule. Parsing a study's module costs as much as the report study's whole workflow, so the Snakefile loads
    the modules only then. $LAYERSWEEP_STUDIES=1 loads them whatever the command (e.g. for --list-rules)."""
    environ = os.environ if environ is None else environ
    if environ.get(LOAD_STUDIES_ENV, "").strip() == "1":
        return True
    rule_prefixes = tuple(f"{module_name(n)}_" for n in names)
    for arg in argv:
        path = arg[2:] if arg.startswith("./") else arg
        if os.path.isabs(path):
            path = os.path.relpath(path)
        if path == "tables" or path.startswith(("studies/", "tables/")):
            return True
        rule = arg.split(":", 1)[0] if ":" in arg else None  # --target-jobs 'rule:wildcard=value,...'
        if rule and (rule in TABLE_RULES or rule.startswith(rule_prefixes)):
            return True
    return False
