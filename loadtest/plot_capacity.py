"""One picture of speech-to-text capacity from `loadtest stt` result files: end of speech -> final
and word lag, as distributions, one line per run (arrivals and N).

    python -m kombain.loadtest.plot_capacity loadtest/results/stt-*.json --out docs/img/stt-capacity.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

GOALS = {"eos_final": [(1000, "1.0 s goal")], "word_lag": [(1000, "1 caller: 1.0 s goal"), (2000, "4 callers: 2.0 s goal")]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", type=Path, help="JSON files written by `loadtest stt`")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for path in args.results for r in json.loads(path.read_text())]
    fig, axes = plt.subplots(1, len(GOALS), figsize=(6.5 * len(GOALS), 4.2), squeeze=False)
    for ax, stage in zip(axes[0], GOALS, strict=True):
        for run in runs:
            xs = sorted(v * 1000 for v in run["samples"].get(stage, []))
            if xs:
                ax.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))],
                        label=f"{run.get('arrivals', 'stagger')} N={run['sessions']}")
        for x, label in GOALS[stage]:
            ax.axvline(x, color="grey", linestyle=":", label=label)
        ax.axhline(0.95, color="lightgrey", linewidth=0.8)
        ax.set_title(stage)
        ax.set_xlabel("ms")
        ax.set_ylabel("fraction of samples")
        ax.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    plt.close(fig)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
