"""The loss-curve figure: one line per optimizer, log scale, tuned learning rates in the legend."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

from l2l_plugin.evaluation.report import LEARNED, EvaluationReport  # noqa: E402


def plot_loss_curves(report: EvaluationReport, path: Path | str) -> Path:
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    for name, result in report.optimizers.items():
        label = "LSTM (learned)" if name == LEARNED else f"{name} (lr={result.lr:.3g})"
        axes.plot(range(len(result.curve)), result.curve, label=label, linewidth=2.2 if name == LEARNED else 1.3)
    axes.set_yscale("log")
    axes.set_xlabel("optimizee step")
    axes.set_ylabel(f"mean training loss over {len(report.test_seeds)} held-out tasks")
    axes.set_title(f"{report.family}: learned vs tuned baselines")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path)
    plt.close(figure)
    return path
