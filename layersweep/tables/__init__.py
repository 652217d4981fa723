"""The papers' tables beside ours: specs (config/tables.yaml) and the papers' numbers (config/paper-numbers.csv),
checked against the studies (`spec`); the coefficient cosine similarity of LIFT-CAM Table 2 (`cosine`); one
table per target (`paper`); its markdown / HTML rendering for report.html (`render`).

The names are imported on first use: the workflow reads the specs while it parses, and `cosine` pulls in the
metrics package and torch, which a parse does not need."""
import importlib

_HOME = {"coefficient_cosine": "cosine", "cosine_per_image": "cosine", "cosine_summary": "cosine",
         "paper_table": "paper", "TABLE_COLUMNS": "paper", "table_html": "render", "table_markdown": "render",
         "load_paper_numbers": "spec", "load_table_specs": "spec", "paper_number": "spec"}

__all__ = list(_HOME)


def __getattr__(name):
    if name in _HOME:
        return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
