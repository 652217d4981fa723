"""Every method drawn in one panel has its own marker (issue 21, item 6).

fig5, fig6 and fig8 draw up to four methods in one panel, told apart by marker alone (colour is the layer type);
with more methods, one panel per family, and the markers of the whole figure are still all different. The
checks: every registered method has a style entry; the 20 markers look different when drawn (compared as
rasterised masks, independently of how `style` compares them); every combination of up to four methods, also
with methods unknown to the style table, gets distinct markers; and a drawn fig5 of the issue's four methods
shows four different marker shapes in every panel.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure

from layersweep.attribution import available_methods
from layersweep.figures import style
from layersweep.figures.panels import FEW_METHODS

UNKNOWN = ("newcam", "othercam", "zzcam")  # methods a later issue may add before giving them a style


def _mask(marker) -> np.ndarray:
    """The marker drawn alone, filled black on white, as a boolean 48x48 mask."""
    fig = Figure(figsize=(0.48, 0.48), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.set_xlim(-1, 1)
    ax.set_ylim(-1, 1)
    ax.scatter([0], [0], marker=marker, s=900, c="black", edgecolors="black", linewidths=0)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., 0] < 128


def test_every_registered_method_has_a_style():
    assert set(available_methods()) <= set(style.METHOD_STYLE), set(available_methods()) - set(style.METHOD_STYLE)


def test_the_markers_of_all_methods_look_different():
    markers = {m: style.METHOD_MARKERS[m] for m in sorted(style.METHOD_STYLE)}
    masks = {m: _mask(marker) for m, marker in markers.items()}
    assert all(mask.sum() > 100 for mask in masks.values())  # each is drawn, filled
    # Calibration of "alike": a hexagon and the same hexagon turned by 30 degrees ('h', 'H') differ in 15% of
    # the pixels of the smaller mask, a circle and a hexagon in 18%, a circle and a diamond in 20%.
    close = []
    for a, b in itertools.combinations(masks, 2):
        differ = int((masks[a] ^ masks[b]).sum())
        if differ <= 0.18 * min(masks[a].sum(), masks[b].sum()):
            close.append((a, b, differ))
    assert not close, f"markers that look alike (pixels that differ): {close}"
    assert len({style.marker_shape(m) for m in markers.values()}) == len(markers)


def test_every_panel_combination_has_distinct_markers():
    """Every set of up to FEW_METHODS methods (one panel), registered or not: all markers differ, and a
    registered method keeps its table marker whatever it is drawn with."""
    names = sorted(available_methods()) + list(UNKNOWN)
    combos = 0
    for k in range(1, FEW_METHODS + 1):
        for methods in itertools.combinations(names, k):
            got = style.method_markers(methods)
            assert sorted(got) == sorted(methods)
            assert len({style.marker_shape(m) for m in got.values()}) == k, (methods, got)
            assert all(got[m] is style.METHOD_MARKERS[m] for m in methods if m in style.METHOD_MARKERS)
            combos += 1
    assert combos == sum(len(list(itertools.combinations(names, k))) for k in range(1, FEW_METHODS + 1))


def test_a_figure_with_every_method_and_more_has_distinct_markers():
    """More than FEW_METHODS methods: one panel per family, but markers come from one assignment per figure."""
    methods = sorted(style.METHOD_STYLE) + [f"extra{i}" for i in range(12)]  # more than the spare list holds
    got = style.method_markers(methods)
    assert len({style.marker_shape(m) for m in got.values()}) == len(methods)


def test_unknown_methods_get_a_marker_no_other_method_of_the_panel_has():
    spare = style.method_markers(["newcam"])["newcam"]
    assert style.marker_shape(spare) not in {style.marker_shape(m) for m in style.METHOD_MARKERS.values()}
    # with the spare shapes all drawn by other unknown methods, the next comes from a registered method
    # that is not in the panel, never from one that is
    unknown = [f"new{i}" for i in range(len(style.SPARE_MARKERS) + 1)]
    got = style.method_markers(["gradcam", *unknown])
    assert len({style.marker_shape(m) for m in got.values()}) == len(unknown) + 1


def test_fig5_of_the_issue_draws_four_different_markers_in_every_panel(tmp_path, monkeypatch):
    """Issue 21's fig8 case (gradcam, liftcam, hirescam, scorecam) drawn by fig5, the figure kept in memory."""
    import importlib

    import pandas as pd

    from layersweep import figures

    fig5_module = importlib.import_module("layersweep.figures.fig5")  # the package exports the function fig5

    figs = []
    monkeypatch.setattr(fig5_module, "write_outputs", lambda fig, df, *a, **k: figs.append(fig) or df)
    rng = np.random.default_rng(0)
    methods = ["gradcam", "liftcam", "hirescam", "scorecam"]
    rows = [dict(method=m, layer=l, metric=metric, rescale_r=np.nan, mean=v, ci_low=v - 0.1, ci_high=v + 0.1,
                 n=10, n_constant=0, n_clamped=0)
            for m in methods for l in range(21) for metric in figures.FIG5_METRICS for v in [rng.uniform()]]
    figures.fig5(pd.DataFrame(rows), tmp_path / "f.pdf", tmp_path / "f.png", tmp_path / "f.csv", demo=False, dpi=40)
    panels = [ax for ax in figs[0].axes if ax.collections]
    assert len(panels) == len(figures.FIG5_METRICS)
    for ax in panels:
        scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
        shapes = {tuple(np.round(c.get_paths()[0].vertices, 3).ravel()) for c in scatters}
        assert len(scatters) == len(shapes) == len(methods)


@pytest.mark.parametrize("method", sorted(style.METHOD_STYLE))
def test_hollow_reference_markers_stay_visible(method):
    """The reference overlay draws markers with facecolors='none': an unfilled marker (e.g. 'x') would vanish."""
    assert style.marker_shape(style.METHOD_MARKERS[method])[0], method
