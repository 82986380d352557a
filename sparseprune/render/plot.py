"""`--plot`: log10|w| distribution per layer with the threshold marked, and sparsity bars."""

from __future__ import annotations

import math

import numpy as np

from sparseprune.inspect.inspection import ModelReport
from sparseprune.numeric.stats import LOG10_EDGES


def save_plot(report: ModelReport, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Reversed so the first layer is drawn on top, as in the table.
    weights = [w for w in report.weights if w.shown and w.stats.histogram is not None][::-1]
    fig, (dist, bars) = plt.subplots(
        1,
        2,
        figsize=(13, max(4.0, 0.45 * len(weights) + 2)),
        gridspec_kw={"width_ratios": [3, 2]},
    )
    centers = (LOG10_EDGES[:-1] + LOG10_EDGES[1:]) / 2
    for row, weight in enumerate(weights):
        counts = weight.stats.histogram
        assert counts is not None  # rows without a histogram were left out above
        scale = 0.8 / max(int(counts.max()), 1)
        dist.fill_between(centers, row, row + counts * scale, step="mid", alpha=0.7)
        if weight.stats.zeros:
            dist.annotate(
                f"+{weight.stats.zeros:,} exact 0",
                (0.01, row + 0.1),
                fontsize=7,
                xycoords=("axes fraction", "data"),
            )
    threshold = math.log10(report.threshold) if report.threshold > 0 else LOG10_EDGES[0]
    dist.set_xlim(
        *_x_range([w.stats.histogram for w in weights if w.stats.histogram is not None], threshold)
    )
    dist.axvline(
        threshold, color="crimson", linestyle="--", label=f"threshold {report.threshold:g}"
    )
    labels = [w.tensor.name for w in weights]
    dist.set_yticks(np.arange(len(weights)) + 0.4, labels, fontsize=8)
    dist.set_xlabel("log10 |w|")
    dist.set_title("Weight magnitude distribution")
    dist.legend(loc="upper right", fontsize=8)
    sparsity = [w.stats.sparsity for w in weights]
    bars.barh(np.arange(len(weights)) + 0.4, sparsity, height=0.6, color="slateblue")
    bars.set_yticks(np.arange(len(weights)) + 0.4, [""] * len(weights))
    bars.set_xlim(0, 1)
    bars.set_xlabel(f"fraction with |w| <= {report.threshold:g}")
    bars.set_title("Near-zero fraction per tensor")
    for y, value in enumerate(sparsity):
        bars.text(min(value, 0.85) + 0.01, y + 0.3, f"{value:.1%}", fontsize=8)
    fig.suptitle(report.path)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)


def _x_range(histograms: list[np.ndarray], threshold: float) -> tuple[float, float]:
    """The occupied part of the log10 axis, widened to show the threshold."""
    occupied = np.flatnonzero(np.sum(histograms, axis=0)) if histograms else np.array([])
    if occupied.size == 0:
        return threshold - 2, threshold + 2
    low = min(LOG10_EDGES[occupied[0]], threshold) - 1
    high = max(LOG10_EDGES[occupied[-1] + 1], threshold) + 1
    return float(low), float(high)
