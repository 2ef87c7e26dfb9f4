"""Draw the benchmark figures as PNG charts (matplotlib, in the ``bench`` extra).

    python -m bench --json --runs 3 workflow_steps scaling actors > docs/bench/results.jsonl
    python bench/charts.py docs/bench/results.jsonl --out docs/bench

Reads the JSON lines the ``bench/`` scripts print (figures summarized over runs as
``[median, min, max]``, or single values) and writes:

- ``scaling.png``: workflow steps/s against concurrent workflows (1 to 1,000), garrison
  at ``synchronous="normal"`` and ``"full"`` beside DBOS on SQLite (its default FULL),
  medians with the range of the runs as a band;
- ``ratios.png``: each peer ratio (garrison / peer, higher is better), median with
  its range, beside its target, and garrison's steps/s at 1,000 concurrent workflows
  against 100 (target: at least 1).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

#: (script, flat key, label, target)
RATIOS: list[tuple[str, str, str, float]] = [
    ("workflow_steps", "ratio_wf10_vs_dbos", "10-step workflows in sequence, end to end", 30),
    ("workflow_steps", "ratio_seq_step_vs_dbos", "sequential step (marginal)", 25),
    ("workflow_steps", "ratio_conc100_step_vs_dbos", "100 concurrent, nursery", 50),
    ("workflow_steps", "ratio_loop100_vs_dbos", "100 awaited starts in a loop", 60),
    ("workflow_steps", "ratio_wf10_full_vs_dbos", "FULL: workflows in sequence", 6),
    ("workflow_steps", "ratio_conc100_step_full_vs_dbos", "FULL: 100 concurrent, nursery", 25),
    ("workflow_steps", "ratio_loop100_full_vs_dbos", "FULL: 100 awaited starts in a loop", 25),
    ("workflow_steps", "ratio_msg_rt_vs_dbos", "message into a workflow and back", 0),
    ("actors", "ratio_call_vs_pykka_ask", "process.call vs pykka ask", 4),
    ("actors", "ratio_msgs_vs_pykka_tell", "messages vs pykka tell", 1),
    ("actors", "ratio_spawn_outside_vs_start_soon", "node.spawn x10k from outside vs trio",
     0.5),
    ("actors", "ratio_spawn_vs_start_soon", "spawn+exit vs trio start_soon", 0.5),
    ("scaling", "normal_1000_vs_100", "steps/s at 1,000 concurrent vs at 100", 1),
    ("scaling", "full_1000_vs_100", "FULL: steps/s at 1,000 vs at 100", 1),
]


def _figure(value: Any) -> tuple[float, float, float] | None:
    """(median, min, max) of a figure, or None if missing."""
    if isinstance(value, list) and len(value) == 3:
        return float(value[0]), float(value[1]), float(value[2])
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value), float(value), float(value)
    return None


def _get(data: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def load(path: Path) -> dict[str, dict[str, Any]]:
    """The last line of each script in ``path``, by script name."""
    out: dict[str, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            data = json.loads(line)
            out[str(data.get("bench"))] = data
    return out


def scaling_chart(results: dict[str, dict[str, Any]], out: Path) -> Path | None:
    import matplotlib.pyplot as plt

    data = results.get("scaling")
    if data is None:
        return None
    levels = [int(x) for x in _get(data, "levels") or [1, 10, 100, 1000]]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    series = [("normal", "garrison, default (normal)", "tab:blue"),
              ("full", 'garrison, synchronous="full"', "tab:green"),
              ("dbos", "DBOS on SQLite (its FULL)", "tab:red")]
    for key, label, color in series:
        points = [_figure(_get(data, f"{key}.{n}.steps_per_s")) for n in levels]
        xs = [n for n, p in zip(levels, points, strict=True) if p is not None]
        ps = [p for p in points if p is not None]
        if not ps:
            continue
        ax.plot(xs, [p[0] for p in ps], marker="o", color=color, label=label)
        ax.fill_between(xs, [p[1] for p in ps], [p[2] for p in ps], color=color, alpha=0.15)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(levels, [f"{n:,}" for n in levels])
    ax.set_xlabel("concurrent workflows (10 steps each)")
    ax.set_ylabel("workflow steps per second")
    runs = data.get("runs", 1)
    ax.set_title(f"Throughput against concurrency (median of {runs} runs, band: range)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="center right", fontsize=8)
    fig.tight_layout()
    path = out / "scaling.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def ratios_chart(results: dict[str, dict[str, Any]], out: Path) -> Path | None:
    import matplotlib.pyplot as plt

    rows = []
    for script, key, label, target in RATIOS:
        figure = _figure(_get(results.get(script, {}), key))
        if figure is not None:
            rows.append((label, figure, target))
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(rows) + 1.2), dpi=110)
    ys = list(range(len(rows)))[::-1]
    for y, (_label, (med, lo, hi), target) in zip(ys, rows, strict=True):
        met = target == 0 or med >= target
        ax.barh(y, med, color="tab:blue" if met else "tab:orange", alpha=0.8)
        ax.errorbar(med, y, xerr=[[med - lo], [hi - med]], color="black", capsize=3, lw=1)
        if target:
            ax.plot([target, target], [y - 0.4, y + 0.4], color="black", lw=2)
        ax.text(max(hi, target) * 1.12, y, f"{med:g}x", va="center", fontsize=8)
    ax.set_yticks(ys, [r[0] for r in rows], fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("garrison / peer, or 1,000 / 100 concurrent "
                  "(higher is better; black tick: target)")
    ax.axvline(1, color="grey", lw=0.8)
    ax.set_title("Peer ratios: median of the runs, whiskers: range "
                 "(DBOS on SQLite, pykka, trio)", fontsize=10)
    ax.grid(True, axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    path = out / "ratios.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("results", type=Path, help="JSON lines from python -m bench --json")
    parser.add_argument("--out", type=Path, default=Path("docs/bench"))
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    args.out.mkdir(parents=True, exist_ok=True)
    results = load(args.results)
    for path in (scaling_chart(results, args.out), ratios_chart(results, args.out)):
        if path is not None:
            print(path)


if __name__ == "__main__":
    main()
