"""Fig. 4: receptive-field size and jump of one unit of each layer's output."""
from __future__ import annotations

import pandas as pd
from matplotlib.lines import Line2D

from ..errors import LayersweepError
from .inputs import specs_by_index
from .style import kind_colour, kinds_in, layer_axis, new_figure, write_outputs


def fig4(specs, out_pdf, out_png, out_csv, *, demo, dpi) -> pd.DataFrame:
    """Receptive-field size (and jump) of one output unit against the layer."""
    spec_map = specs_by_index(specs)
    if not spec_map:
        raise LayersweepError("fig4 got no layers.")
    table = pd.DataFrame([dict(layer=s.index, name=s.name, kind=s.kind, rf_size=s.rf_size, jump=s.jump)
                          for s in sorted(spec_map.values(), key=lambda s: s.index)])
    fig = new_figure((10.0, 4.8), demo)
    ax = fig.subplots()
    ax.plot(table["layer"], table["rf_size"], color="0.6", lw=1.0, zorder=1)
    ax.plot(table["layer"], table["jump"], color="0.4", ls="--", lw=1.0, marker="x", ms=4, zorder=1)
    for kind in kinds_in(table):
        part = table[table["kind"] == kind]
        ax.scatter(part["layer"], part["rf_size"], color=kind_colour(kind), s=40, edgecolors="black",
                   linewidths=0.4, zorder=3, label=kind)
    for _, row in table.iterrows():
        ax.annotate(str(row["rf_size"]), (row["layer"], row["rf_size"]), textcoords="offset points",
                    xytext=(0, 6), ha="center", fontsize=7)
    layer_axis(ax, table["layer"], spec_map)
    ax.set_ylim(0, table["rf_size"].max() * 1.12)
    ax.set_ylabel("pixels")
    ax.set_title("Fig. 4: receptive field of one unit of each layer's output")
    handles, _ = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="0.6", lw=1.0, marker="o", mfc="white", mec="black",
                       label="receptive-field size\n(side, input pixels)"),
                Line2D([], [], color="0.4", ls="--", lw=1.0, marker="x", ms=4,
                       label="jump (input pixels\nbetween units)")]
    fig.legend(handles=handles, loc="outside right upper", fontsize=9, title="layer type", title_fontsize=9)
    return write_outputs(fig, table, out_pdf, out_png, out_csv, dpi)


TRANSFORMER_NOTE = ("Fig. 4 is skipped for {arch}: self-attention lets every token read every other, so a unit "
                    "of a transformer block has no receptive field of fixed size (the whole input).")


def fig4_transformer(arch: str, out_pdf, out_png, out_csv, *, demo, dpi) -> pd.DataFrame:
    """Fig. 4 of a transformer arch: the one sentence saying why it is skipped, as the figure and its table."""
    note = TRANSFORMER_NOTE.format(arch=arch)
    table = pd.DataFrame([dict(arch=arch, skipped=True, reason=note)])
    fig = new_figure((10.0, 2.0), demo)
    fig.text(0.5, 0.5, note, ha="center", va="center", wrap=True, fontsize=10)
    return write_outputs(fig, table, out_pdf, out_png, out_csv, dpi)

