"""Do a shorter head's tied scores break `--target-precision`, and would a tie-break mend it?
(issue 10; docs/studies/cl-gap.md, "How long to train the head")

    python benchmarks/studies/tie_study.py [--epochs 12]

Runs DynaCor on the whole dev file's CIFAR-10N worse labels with ``--epochs`` classifier epochs
(the estimate windows at 12 epochs chosen on the tuning half: noise epochs 2-7, recall 0-3) and
applies the cut ``--target-precision 0.9`` chooses, once on the score itself and once on the score
with ties broken by the mean raw margin over the epochs (lower first). Prints how many distinct
scores there are, the estimated curve's best precision and the true precision of the flags.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from dynacor.data.featurefile import load_features
from dynacor.method.config import DynaCorConfig
from dynacor.method.estimates import estimated_curve, threshold_for_target
from dynacor.method.pipeline import run

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", default=str(ROOT.parent / "shared" / "data" / "cifar10_effl0_dev.npz"))
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args()
    data = load_features(args.features, labels_key="worse_labels", needs_clean=True)
    config = DynaCorConfig(explain_neighbours=0, epochs=args.epochs, noise_window=(2 / args.epochs, 8 / args.epochs),
                           recall_window=(0.0, 4 / args.epochs))  # fmt: skip
    result = run(config, data)
    n = result.num_samples
    noisy = result.given_labels != data.clean_labels
    order = np.lexsort((result.margins_all[:n].mean(axis=1), -result.q_noisy))
    tie_broken = np.empty(n)
    tie_broken[order] = np.arange(n, 0, -1) / n
    rows, off = result.estimate_parts["rows"], result.estimate_parts["off"]
    eta = result.estimates["noise_rate"]["value"]
    for name, score in (("score", result.q_noisy.astype(np.float64)), ("score, ties broken", tie_broken)):
        curve = estimated_curve(score[rows], off, eta)
        cut, warning = threshold_for_target(curve, target_precision=0.9)
        flagged = score > cut
        print(f"{name}: {len(np.unique(score))} distinct, curve's best estimated precision "
              f"{100 * max(curve['precision']):.1f}%, {int(flagged.sum())} flagged at the 0.9 target, true precision "
              f"{100 * noisy[flagged].mean():.1f}%{' (target not reached: ' + warning + ')' if warning else ''}")  # fmt: skip


if __name__ == "__main__":
    main()
