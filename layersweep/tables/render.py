"""A paper table as markdown (tables/<name>.md) and as an HTML page for report.html: one line per paper row
and study, each metric as 'paper | ours [CI] (n)', the notes below, then the configuration of every study the
table reads, as YAML."""
from __future__ import annotations

import html

import numpy as np
import pandas as pd
import yaml


class _ConfigDumper(yaml.SafeDumper):
    """Mappings in block style (one key a line), lists of scalars on one line: the config as one writes it."""


def _list(dumper, data):
    flat = all(not isinstance(v, (dict, list)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)


_ConfigDumper.add_representer(list, _list)


def config_yaml(cfg: dict) -> str:
    """A config as readable YAML (key order kept)."""
    return yaml.dump(cfg, Dumper=_ConfigDumper, sort_keys=False, default_flow_style=False, width=110)


def _fmt(x, digits: int) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _digits(column_rows: pd.DataFrame) -> int:
    return 3 if (column_rows["metric"] == "cosine").any() else 2


def _wide(table: pd.DataFrame) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, body cells and numbered notes of the rendering."""
    columns = list(dict.fromkeys(table["column"]))
    header = ["paper row", "method", "study", "model", "layer"]
    for c in columns:
        header += [f"{c}: paper", f"{c}: ours [95% CI] (n)"]
    notes: list[str] = []
    body = []
    for (paper_row, study), g in table.groupby(["paper_row", "study"], sort=False):
        first = g.iloc[0]
        cells = [paper_row, first["method"], study, first["model"], f"features.{first['layer']}" if first["layer"] >= 0 else "n/a"]
        for c in columns:
            r = g[g["column"] == c].iloc[0]
            d = _digits(g[g["column"] == c])
            cells.append(_fmt(r["paper"], d))
            if np.isfinite(r["ours"]):
                text = f"{_fmt(r['ours'], d)} [{_fmt(r['ci_low'], d)}, {_fmt(r['ci_high'], d)}] ({int(r['n'])})"
            else:
                text = "n/a"
            if r["note"]:
                if r["note"] not in notes:
                    notes.append(r["note"])
                text += f" [{notes.index(r['note']) + 1}]"
            cells.append(text)
        body.append(cells)
    return header, body, notes


def table_markdown(title: str, table: pd.DataFrame) -> str:
    header, body, notes = _wide(table)
    lines = [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in body]
    if notes:
        lines += [""] + [f"[{i}] {n}" for i, n in enumerate(notes, 1)]
    citations = list(dict.fromkeys(table["citation"].str.rsplit(", Table", n=1).str[0]))
    lines += ["", "Paper: " + "; ".join(citations)]
    return "\n".join(lines) + "\n"


def table_html(title: str, table: pd.DataFrame, study_configs: dict, study_files: dict | None = None,
               demo: bool = False) -> str:
    """A standalone page: the table, its notes and citation, and each study's configuration as YAML: its
    study file as written (`study_files`: {study: text}), then the full config under a fold."""
    header, body, notes = _wide(table)
    e = html.escape
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>" + e(title) + "</title><style>"
             "body{font-family:sans-serif;font-size:14px;margin:1em}table{border-collapse:collapse}"
             "th,td{border:1px solid #bbb;padding:3px 7px;text-align:right}th{background:#eee}"
             "td:nth-child(-n+5){text-align:left}pre{background:#f6f6f6;padding:.6em;font-size:12px}"
             ".demo{color:#c00;font-weight:bold}</style></head><body>", f"<h2>{e(title)}</h2>"]
    if demo:
        parts.append("<p class='demo'>Synthetic demo data, random weights: the numbers say nothing.</p>")
    parts.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
    parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>" for cells in body]
    parts.append("</table>")
    if notes:
        parts.append("<ol>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ol>")
    citations = list(dict.fromkeys(table["citation"].str.rsplit(", Table", n=1).str[0]))
    parts.append("<p>Paper: " + e("; ".join(citations)) + ". Ours: mean over samples, 95% percentile-bootstrap "
                 "CI, n = samples with a value (constant maps left out).</p>")
    for study, cfg in study_configs.items():
        parts.append(f"<h3>Configuration used: study {e(study)}</h3>")
        if study in (study_files or {}):
            parts.append(f"<p>config/studies/{e(study)}.yaml (the set-up, over config.yaml):</p>"
                         f"<pre>{e(study_files[study])}</pre><details><summary>the full configuration "
                         "(config.yaml with the study's keys on top)</summary>")
        parts.append(f"<pre>{e(config_yaml(cfg))}</pre>")
        if study in (study_files or {}):
            parts.append("</details>")
    parts.append("</body></html>")
    return "\n".join(parts)
