"""Plots for chapter 6: reliability diagrams, where an OOD threshold falls, accuracy under attack.

Pure functions that return matplotlib Figures (tested headless); the notebook wires the
threshold explorer to :func:`threshold_controls`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from matplotlib.figure import Figure

from course_lib.hardening.calibration import expected_calibration_error, reliability_bins
from course_lib.hardening.guard import calibrate_threshold

__all__ = [
    "flagged_rates",
    "reliability_figure",
    "threshold_figure",
    "threshold_controls",
    "attack_figure",
]

_OOD_COLORS = ["#d95f02", "#7570b3", "#e7298a", "#66a61e"]


def flagged_rates(scores: dict[str, torch.Tensor], threshold: float) -> dict[str, float]:
    """For each named set of scores: the share flagged as OOD (score below ``threshold``)."""
    return {name: (values < threshold).double().mean().item() for name, values in scores.items()}


def threshold_figure(
    val_scores: torch.Tensor,
    test_scores: torch.Tensor,
    ood_scores: dict[str, torch.Tensor],
    *,
    false_positive_rate: float = 0.05,
    score_name: str = "max softmax probability",
) -> Figure:
    """Histograms of OOD scores: test inputs like the training data against each OOD set.

    The threshold is calibrated on ``val_scores`` (validation inputs) so that
    ``false_positive_rate`` of them fall below it; the title reports the share of test inputs
    wrongly flagged and of each OOD set caught.
    """
    threshold = calibrate_threshold(val_scores, false_positive_rate)
    rates = flagged_rates({"test": test_scores, **ood_scores}, threshold)
    everything = torch.cat([test_scores, *ood_scores.values()]).double()
    bins = torch.linspace(everything.min().item(), everything.max().item(), 41).tolist()
    figure = Figure(figsize=(7, 3.6), layout="constrained")
    axes = figure.subplots()
    # outlines, not translucent fills: overlapping fills blend into colours of their own
    axes.hist(
        test_scores.tolist(),
        bins=bins,
        histtype="step",
        linewidth=2,
        color="#1b9e77",
        label=f"test digits: {rates['test']:.0%} wrongly flagged",
    )
    for color, (name, values) in zip(_OOD_COLORS, ood_scores.items(), strict=False):
        axes.hist(
            values.tolist(),
            bins=bins,
            histtype="step",
            linewidth=1.5,
            color=color,
            label=f"{name}: {rates[name]:.0%} caught",
        )
    axes.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3g}")
    axes.set_title(
        f"Below the threshold: flagged as out of distribution "
        f"(calibrated for {false_positive_rate:.0%} of validation digits)",
        fontsize=10,
    )
    axes.set_xlabel(score_name + " (higher: more like the training data)")
    axes.set_yscale("log")  # the digits pile up near the top score; a log scale shows the tails
    axes.set_ylabel("inputs (log scale)")
    axes.legend(fontsize=8, loc="upper left")
    return figure


def reliability_figure(
    panels: dict[str, tuple[torch.Tensor, torch.Tensor]], bins: int = 10
) -> Figure:
    """One reliability diagram per panel: accuracy against confidence, bin by bin.

    ``panels`` maps a title to ``(probabilities (N, classes), targets (N,))``. Each filled bar
    is a confidence bin, its height the accuracy there; the orange outline is the bin's mean
    confidence, where a calibrated model's bar would end (the diagonal, up to the bin's
    width). The bin's share of predictions is printed above it.
    """
    figure = Figure(figsize=(3.2 * len(panels), 3.4), layout="constrained")
    axes_list = figure.subplots(1, len(panels), squeeze=False)[0]
    for axes, (title, (probabilities, targets)) in zip(axes_list, panels.items(), strict=True):
        table = reliability_bins(probabilities, targets, bins)
        left, width = table["edges"][:-1].tolist(), 1 / bins
        filled = (table["count"] > 0).tolist()
        accuracy = table["accuracy"].nan_to_num(0).tolist()
        confidence = table["confidence"].nan_to_num(0).tolist()
        axes.bar(left, accuracy, width=width, align="edge", color="#7570b3", edgecolor="white")
        axes.bar(
            left,
            confidence,
            width=width,
            align="edge",
            fill=False,
            edgecolor="#d95f02",
            linewidth=1.5,
        )
        axes.plot([0, 1], [0, 1], "k--", linewidth=1)
        share = (table["count"] / len(targets)).tolist()
        tops = [max(a, c) for a, c in zip(accuracy, confidence, strict=True)]
        for x, top, part, f in zip(left, tops, share, filled, strict=True):
            if f and part >= 0.01:
                axes.text(x + width / 2, top + 0.02, f"{part:.0%}", ha="center", fontsize=7)
        ece = expected_calibration_error(probabilities, targets, bins)
        axes.set_title(f"{title}\nECE {ece:.3f}", fontsize=9)
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1.08)
        axes.set_aspect("equal")
        axes.set_xlabel("confidence (top softmax probability)")
    axes_list[0].set_ylabel("accuracy in the bin")
    return figure


def threshold_controls():
    """Controls for the threshold explorer: which score, and the target false-positive rate."""
    import ipywidgets as widgets

    from course_lib.widgets import Controls

    return Controls(
        score=widgets.Dropdown(
            options=[("max softmax probability", "msp"), ("energy", "energy")],
            value="msp",
            description="score",
        ),
        false_positive_rate=widgets.FloatSlider(
            value=0.05, min=0.01, max=0.3, step=0.01, description="false pos.", readout_format=".0%"
        ),
    )


def attack_figure(
    epsilons: Sequence[float],
    accuracies: dict[str, Sequence[float]],
    original: torch.Tensor,
    attacked: torch.Tensor,
    *,
    epsilon: float,
    labels: tuple[int, int],
) -> Figure:
    """Accuracy against epsilon for each attack, next to one image before and after an attack.

    ``original`` and ``attacked`` are (1, H, W) images; ``labels`` the model's answers for
    them; ``epsilon`` the attack strength used for the image.
    """
    figure = Figure(figsize=(9, 3.2), layout="constrained")
    curve, before, after, change = figure.subplots(1, 4, width_ratios=[2.4, 1, 1, 1])
    for name, values in accuracies.items():
        curve.plot(list(epsilons), list(values), "o-", label=name)
    curve.set_xlabel("epsilon (largest change per pixel, pixels in 0..1)")
    curve.set_ylabel("test accuracy")
    curve.set_ylim(0, 1)
    curve.grid(alpha=0.3)
    curve.legend(fontsize=8)
    difference = (attacked - original)[0]
    for axes, image, title, cmap in [
        (before, original[0], f"original: {labels[0]}", "gray_r"),
        (after, attacked[0], f"attacked: {labels[1]}", "gray_r"),
        (change, difference, f"change (±{epsilon:g})", "coolwarm"),
    ]:
        limits = (0, 1) if cmap == "gray_r" else (-epsilon, epsilon)
        axes.imshow(image.numpy(), cmap=cmap, vmin=limits[0], vmax=limits[1])
        axes.set_title(title, fontsize=9)
        axes.set_xticks([])
        axes.set_yticks([])
    return figure
