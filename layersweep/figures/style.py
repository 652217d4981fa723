"""What every figure shares: labels, markers and colours of every method and layer kind, the demo stamp,
the layer axis, the colour map of attribution maps, and the atomic PDF + PNG + CSV writing.

A method not listed here still draws: its label is its name, its family 'other', and it gets a spare
marker (one no other method of the figure uses) and a colour from the same stable, name-sorted assignment.
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.markers import MarkerStyle
from matplotlib.path import Path

from ..io import atomic_path

DEMO_STAMP = "SYNTHETIC DEMO DATA - RANDOMLY INITIALISED WEIGHTS - not the study's results"



def _polygon(vertices) -> Path:
    """A filled marker of the given outline (matplotlib scales a path marker to its largest coordinate)."""
    vertices = [tuple(map(float, v)) for v in vertices]
    return Path(vertices + [vertices[0]], [Path.MOVETO] + [Path.LINETO] * (len(vertices) - 1) + [Path.CLOSEPOLY])


# Shapes beyond matplotlib's 15 filled markers: 20 methods need 20 markers that look different at 30 pt^2.
_ARC = np.linspace(0.0, np.pi, 13)
BOWTIE = _polygon([(-1, -1), (1, 1), (1, -1), (-1, 1)])
HOURGLASS = _polygon([(-1, -1), (1, -1), (-1, 1), (1, 1)])
TEE = _polygon([(-1, 1), (1, 1), (1, 0.35), (0.3, 0.35), (0.3, -1), (-0.3, -1), (-0.3, 0.35), (-1, 0.35)])
DART = _polygon([(0, 1), (1, -1), (0, -0.35), (-1, -1)])
HALF_DISC = _polygon([(np.cos(a), np.sin(a) - 0.5) for a in _ARC])
CRESCENT = _polygon([(np.cos(a), np.sin(a)) for a in np.linspace(0.35 * np.pi, 1.65 * np.pi, 16)]
                    + [(0.5 + 0.75 * np.cos(a), 0.75 * np.sin(a)) for a in np.linspace(1.55 * np.pi, 0.45 * np.pi, 16)])
ARROW = _polygon([(-0.35, -1), (0.35, -1), (0.35, 0.1), (0.9, 0.1), (0, 1), (-0.9, 0.1), (-0.35, 0.1)])
SPARKLE = (4, 1, 0)  # four-pointed star
CUP = _polygon([(-1, 1), (-1, -1), (1, -1), (1, 1), (0.4, 1), (0.4, -0.3), (-0.4, -0.3), (-0.4, 1)])
BAR = _polygon([(-1, -0.45), (1, -0.45), (1, 0.45), (-1, 0.45)])
TRAPEZOID = _polygon([(-1, -0.7), (1, -0.7), (0.45, 0.7), (-0.45, 0.7)])
ELL = _polygon([(-1, -1), (1, -1), (1, -0.3), (-0.3, -0.3), (-0.3, 1), (-1, 1)])

# method -> (label, family, marker). Families group methods that share a pass (and usually behave alike),
# so that a figure with many methods can draw one panel row per family. Every method has its own marker
# (tests/test_figure_markers.py): up to four methods share one panel, told apart by marker alone.
METHOD_STYLE = {
    "deepliftshap": ("DeepLiftShap", "DeepLift", "o"),
    "liftcam": ("LIFT-CAM", "DeepLift", "s"),
    "gradcampp": ("Grad-CAM++", "gradient CAM", "^"),
    "gradcam": ("Grad-CAM", "gradient CAM", "v"),
    "xgradcam": ("XGrad-CAM", "gradient CAM", "<"),
    "layercam": ("LayerCAM", "gradient CAM", ">"),
    "hirescam": ("HiResCAM", "gradient CAM", "D"),
    "gradcam_elementwise": ("Grad-CAM element-wise", "gradient CAM", "d"),
    "fullgrad": ("FullGrad", "gradient CAM", "P"),
    "shapleycam": ("ShapleyCAM", "gradient CAM", "X"),
    "finercam": ("FinerCAM", "gradient CAM", "p"),
    "eigencam": ("EigenCAM", "activation (PCA) CAM", ARROW),
    "eigengradcam": ("EigenGrad-CAM", "activation (PCA) CAM", CRESCENT),
    "segeigencam": ("SegEigenCAM", "activation (PCA) CAM", SPARKLE),
    "fem": ("FEM", "activation (PCA) CAM", "*"),
    "randomcam": ("RandomCAM", "activation (PCA) CAM", TEE),
    "ablationcam": ("AblationCAM", "perturbation", BOWTIE),
    "shapcam_pi": ("SHAP-CAM|\u03a0|", "perturbation", HOURGLASS),
    "shapcam": ("Shap-CAM", "perturbation", DART),
    "scorecam": ("Score-CAM", "perturbation", HALF_DISC),
    "refinecam": ("RefineCAM", "multi-layer", CUP),
    "allones": ("all ones", "sanity", BAR),
    "half": ("all 0.5", "sanity", TRAPEZOID),
    "uniformnoise": ("uniform noise", "sanity", ELL),
}
METHOD_LABELS = {m: s[0] for m, s in METHOD_STYLE.items()}
METHOD_FAMILIES = {m: s[1] for m, s in METHOD_STYLE.items()}
METHOD_MARKERS = {m: s[2] for m, s in METHOD_STYLE.items()}
FAMILY_ORDER = ("DeepLift", "gradient CAM", "activation (PCA) CAM", "perturbation", "multi-layer", "sanity", "other")
# For methods not in METHOD_STYLE: first these (no listed method uses them), then the markers of the listed
# methods that are not in the figure, then regular polygons of 9, 10, ... sides.
SPARE_MARKERS = ("h", (6, 1, 0), "H", (8, 1, 0), "8")
KIND_COLOURS = {"Conv2d": "#1f77b4", "ReLU": "#ff7f0e", "MaxPool2d": "#2ca02c"}
OTHER_KIND_COLOUR = "#7f7f7f"

# metric -> (panel title, y label, higher is better)
METRICS = {
    "ad": ("Average Drop", "AD (%)", False),
    "ic": ("Increase in Confidence", "IC (%)", True),
    "insertion_auc": ("Insertion AUC", "insertion AUC", True),
    "deletion_auc": ("Deletion AUC", "deletion AUC", False),
}


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def method_family(method: str) -> str:
    return METHOD_FAMILIES.get(method, "other")


@functools.lru_cache(maxsize=None)
def marker_shape(marker) -> tuple:
    """What a marker looks like: its outline as matplotlib draws it, scaled to unit size, rounded (so that two
    spellings of one shape, e.g. 'h' and (6, 0, 0), count as the same marker)."""
    style = MarkerStyle(marker)
    vertices = style.get_path().transformed(style.get_transform()).vertices
    vertices = vertices / max(np.abs(vertices).max(), 1e-12)
    return style.is_filled(), tuple(np.round(vertices, 3).ravel().tolist())


def method_markers(methods) -> dict:
    """{method: marker} for the methods of one figure, all different: a listed method keeps its own marker; any
    other method gets, in name order, the first spare marker whose shape no method of `methods` has yet."""
    methods = sorted(set(methods))
    out = {m: METHOD_MARKERS[m] for m in methods if m in METHOD_MARKERS}
    taken = {marker_shape(marker) for marker in out.values()}
    spares = itertools.chain(SPARE_MARKERS, (METHOD_MARKERS[m] for m in METHOD_MARKERS if m not in out),
                             ((n, 0, 0) for n in itertools.count(9)))
    for method in methods:
        if method not in out:
            out[method] = next(marker for marker in spares if marker_shape(marker) not in taken)
            taken.add(marker_shape(out[method]))
    return {m: out[m] for m in methods}


def method_colours(methods) -> dict[str, str]:
    """One colour per method, stable for a given method set: tab10 up to 10 methods, tab20 beyond."""
    methods = sorted(methods)
    cmap = colormaps["tab10" if len(methods) <= 10 else "tab20"]
    return {m: cmap(i % cmap.N) for i, m in enumerate(methods)}


def families(methods) -> dict[str, list[str]]:
    """Methods grouped by family, families in FAMILY_ORDER, methods sorted by name within each."""
    out: dict[str, list[str]] = {}
    for fam in FAMILY_ORDER:
        members = sorted(m for m in methods if method_family(m) == fam)
        if members:
            out[fam] = members
    return out


def kind_colour(kind: str) -> str:
    return KIND_COLOURS.get(kind, OTHER_KIND_COLOUR)


def demo_stamp(fig: Figure) -> None:
    """A red diagonal across the whole figure, sized to fit its diagonal, drawn above everything."""
    w, h = fig.get_size_inches()
    angle = math.degrees(math.atan2(h, w))
    diag_pt = math.hypot(w, h) * 72
    size = max(7.0, min(36.0, 0.78 * diag_pt / (0.68 * len(DEMO_STAMP))))  # bold glyphs ~0.68 em wide
    # A translucent white box keeps the stamp legible over busy images without hiding the data.
    fig.text(0.5, 0.5, DEMO_STAMP, rotation=angle, rotation_mode="anchor", ha="center", va="center",
             fontsize=size, fontweight="bold", color="red", alpha=0.8, zorder=1000,
             transform=fig.transFigure,
             bbox=dict(boxstyle="round,pad=0.3", facecolor="white", edgecolor="red", alpha=0.55))


def new_figure(figsize, demo: bool, layout: str | None = "constrained") -> Figure:
    """A pyplot-free figure on the Agg canvas. layout None: the caller places the axes (a large grid, where
    constrained layout would take minutes)."""
    fig = Figure(figsize=figsize, layout=layout)
    FigureCanvasAgg(fig)
    if demo:
        demo_stamp(fig)
    return fig


def write_outputs(fig: Figure, df: pd.DataFrame, out_pdf, out_png, out_csv, dpi) -> pd.DataFrame:
    """All three files appear together or not at all (renames happen only after every write succeeded)."""
    dpi = int(dpi)
    with contextlib.ExitStack() as stack:
        tmp_pdf = stack.enter_context(atomic_path(out_pdf))
        tmp_png = stack.enter_context(atomic_path(out_png))
        tmp_csv = stack.enter_context(atomic_path(out_csv))
        # The temp names end in '.part': matplotlib must be told the format.
        fig.savefig(tmp_pdf, format="pdf", dpi=dpi, metadata={"CreationDate": None})
        fig.savefig(tmp_png, format="png", dpi=dpi)
        df.to_csv(tmp_csv, index=False)
    return df

def write_csv(df: pd.DataFrame, out_csv) -> pd.DataFrame:
    """A table that goes with no figure (e.g. the atlas' index), written atomically."""
    with atomic_path(out_csv) as tmp:
        df.to_csv(tmp, index=False)
    return df


FALLBACK_MARK = "\u2020"  # a site where DeepLift takes captum's plain-gradient fallback after it


def layer_axis(ax, layers, spec_map) -> None:
    """x = layer index, ticks = site names (a block's module path where the site ends a block) coloured by
    kind; a dagger marks sites whose DeepLift maps take captum's plain-gradient fallback somewhere after them."""
    layers = sorted(set(int(l) for l in layers))
    ax.set_xticks(layers)
    ax.set_xticklabels([(getattr(spec_map[l], "label", "") or spec_map[l].name)
                        + (FALLBACK_MARK if getattr(spec_map[l], "deeplift_rules", "exact") != "exact" else "")
                        for l in layers], rotation=90, fontsize=8)
    for tick, l in zip(ax.get_xticklabels(), layers):
        tick.set_color(kind_colour(spec_map[l].kind))
    ax.set_xlim(min(layers) - 0.7, max(layers) + 0.7)
    ax.grid(axis="y", color="0.9", lw=0.6)
    ax.set_axisbelow(True)


def metric_info(metric: str) -> tuple[str, str, bool | None]:
    """(title, y label, higher is better) of a summary metric: the report's four (core), or a column of another
    metric (layersweep.metrics.registry; None = a reference value such as a chance level, no better direction)."""
    if metric in METRICS:
        return METRICS[metric]
    from ..metrics.registry import column_info

    name, direction = column_info(metric)
    title = metric.replace("_", " ")
    return title, f"{title} ({name})" if name != metric else title, {"higher": True, "lower": False}.get(direction)


def better_direction(metric: str) -> str:
    higher = metric_info(metric)[2]
    return "reference value" if higher is None else "higher is better \u2191" if higher else "lower is better \u2193"

def kinds_in(rows) -> list[str]:
    present = set(rows["kind"])
    return [k for k in KIND_COLOURS if k in present] + sorted(present - set(KIND_COLOURS))


def transparent_diverging() -> ListedColormap:
    """RdBu_r whose centre (value 0) is transparent, so the crop shows where the map is ~0."""
    base = colormaps["RdBu_r"](np.linspace(0, 1, 256))
    base[:, 3] = np.clip(np.abs(np.linspace(-1, 1, 256)) ** 0.7 * 1.15, 0, 0.9)
    return ListedColormap(base, name="RdBu_r_transparent")


def upsample(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear, align_corners=False: the protocol's upsampling."""
    t = torch.as_tensor(np.asarray(m, dtype=np.float32))[None, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def long_map(crop_id, map_name, m: np.ndarray) -> pd.DataFrame:
    """One row per map cell: crop_id, map, row, col, value (the maps' CSV layout)."""
    rows, cols = np.indices(m.shape)
    return pd.DataFrame({"crop_id": crop_id, "map": map_name, "row": rows.ravel(), "col": cols.ravel(),
                         "value": m.ravel().astype(float)})
