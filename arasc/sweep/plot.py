"""`arasc sweep --plot`: two pictures of a sweep's table (the `plot` extra, matplotlib).

- the Pareto front: inferences/s against energy per inference, one colour per model; the points
  no other point of the same model beats on both (more inferences/s for no more energy, or less
  energy for no fewer inferences/s) are joined, the others drawn faint;
- each swept field's effect: for every field that takes more than one value, inferences/s and
  energy per inference against its value, per model the median over the other fields' values
  (a line) over every point (faint). An array field (Gbuffer banks) is drawn by its sum."""
from __future__ import annotations

import json
import statistics

from ..isa.atomic import write_atomically


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (energy, rate) points that no other point dominates (no more energy and a higher rate, or
    less energy and no lower rate), by rising energy."""
    front: list[tuple[float, float]] = []
    for energy, rate in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or rate > front[-1][1]:
            front.append((energy, rate))
    return front


def _number(text: str) -> float | str:
    """A table cell as a number for the x axis: arrays by their sum, other text as it is."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, list):
        return float(sum(value))
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else text


def write_plots(rows: list[dict[str, str]], swept: list[str], pareto_path: str, effects_path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok"]
    models = list(dict.fromkeys(r["model"] for r in ok))
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(models)}

    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    for model in models:
        points = [(float(r["energy_per_inference_j"]), float(r["inferences_per_second"])) for r in ok
                  if r["model"] == model]
        ax.scatter([p[0] for p in points], [p[1] for p in points], color=colours[model], alpha=0.3, s=18)
        front = pareto_front(points)
        ax.plot([p[0] for p in front], [p[1] for p in front], "o-", color=colours[model], label=model,
                drawstyle="steps-post", markersize=5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("energy per inference (J)")
    ax.set_ylabel("inferences / s")
    ax.set_title(f"Pareto front, {len(ok)} points ({len(rows) - len(ok)} failed)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_atomically([(pareto_path, lambda f: fig.savefig(f, dpi=110, format="png"))], "--plot")
    plt.close(fig)

    fields = [f for f in swept if f != "model"] or ["model"]
    fig, axes = plt.subplots(2, len(fields), figsize=(4.2 * len(fields), 7), squeeze=False)
    for column, name in enumerate(fields):
        xs = [_number(r[name]) for r in ok]
        categorical = any(isinstance(x, str) for x in xs)
        order = sorted(set(map(str, xs))) if categorical else []
        for row_index, (figure, label) in enumerate((("inferences_per_second", "inferences / s"),
                                                     ("energy_per_inference_j", "energy per inference (J)"))):
            ax = axes[row_index][column]
            for model in models:
                pairs = [(x if not categorical else order.index(str(x)), float(r[figure]))
                         for x, r in zip(xs, ok) if r["model"] == model]
                ax.scatter([p[0] for p in pairs], [p[1] for p in pairs], color=colours[model], alpha=0.25, s=12)
                by_x: dict = {}
                for x, y in pairs:
                    by_x.setdefault(x, []).append(y)
                line = sorted((x, statistics.median(ys)) for x, ys in by_x.items())
                ax.plot([p[0] for p in line], [p[1] for p in line], "o-", color=colours[model], label=model,
                        markersize=4)
            ax.set_yscale("log")
            if categorical:
                ax.set_xticks(range(len(order)), order, rotation=30, fontsize=8)
            elif _spans_decades([x for x in xs if isinstance(x, float)]):
                ax.set_xscale("log")
            ax.set_ylabel(label)
            if row_index == 1:
                ax.set_xlabel(name + (" (sum of banks, bytes)" if name == "gbuffer.banks_bytes" else ""))
    axes[0][0].legend(fontsize=8)
    fig.suptitle("each swept field's effect (line: median over the other fields)")
    fig.tight_layout()
    write_atomically([(effects_path, lambda f: fig.savefig(f, dpi=110, format="png"))], "--plot")
    plt.close(fig)


def _spans_decades(values: list[float]) -> bool:
    positive = [v for v in values if v > 0]
    return len(positive) == len(values) and bool(values) and max(positive) / min(positive) >= 20
