"""Does training the encoder earn its place? (issue 10, item 7) A study on the dev file's tuning
half only (`dynacor.runs.bench.split_halves`, seed 12345), never on the half reported.

    python benchmarks/studies/encoder_study.py [--seeds 0,1] [--variants default,no-train,lr=1e-4+last,...]

Each variant is the default `DynaCorConfig` with some fields changed (``+`` joins changes;
``last`` keeps the encoder's last state, so the trained representation is what clusters, where
the validation metric may keep the initial one); prints one JSON line per
(variant, setting, seed) and a table of F1 (%) per setting and the average. ``no-train`` keeps
the encoder's initial state (``encoder_epochs=0`` is not allowed, so selection is pinned to the
initial state) with the centroid refinement: what the learned representation adds is the
difference to it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dynacor.method.config import DynaCorConfig
from dynacor.method.pipeline import run
from dynacor.runs.bench import DEFAULT_SETTINGS, f1_by_setting, load_half, setting_labels

ROOT = Path(__file__).resolve().parents[2]

VARIANTS = {
    "default": {},
    "no-train": {"selection": "init"},
    "lr=1e-4": {"encoder_lr": 1e-4},
    "lr=1e-3": {"encoder_lr": 1e-3},
    "last": {"selection": "last"},
    "lr=1e-4+last": {"encoder_lr": 1e-4, "selection": "last"},
    "lr=1e-4+epochs=30+last": {"encoder_lr": 1e-4, "encoder_epochs": 30, "selection": "last"},
    "lr=1e-4+batch=256+last": {"encoder_lr": 1e-4, "encoder_batch_size": 256, "selection": "last"},
    "lr=1e-3+last": {"encoder_lr": 1e-3, "selection": "last"},
    "alpha=1+last": {"alpha": 1.0, "selection": "last"},
    # The classifier whose dynamics are clustered (against tuned CL, docs/studies/cl-gap.md).
    "lr=0.01": {"lr": 0.01},
    "epochs=15": {"epochs": 15},
    "hidden=128": {"hidden": 128},
    "wd=1e-4": {"weight_decay": 1e-4},
    "wd=2e-3": {"weight_decay": 2e-3},
}


def variant_changes(name: str) -> dict:
    """A named variant, or ``field=value`` pairs of `DynaCorConfig` joined by ``+`` (``last``: selection)."""
    if name in VARIANTS:
        return VARIANTS[name]
    defaults = DynaCorConfig()
    changes: dict = {}
    for part in name.split("+"):
        if part == "last":
            changes["selection"] = "last"
            continue
        key, _, value = part.partition("=")
        if not hasattr(defaults, key):
            raise SystemExit(f"--variants: `{key}` is not a DynaCorConfig field or a named variant")
        kind = type(getattr(defaults, key))
        changes[key] = value.lower() in ("1", "true") if kind is bool else kind(value)
    return changes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", default=str(ROOT.parent / "shared" / "data" / "cifar10_effl0_dev.npz"))
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    path = Path(args.features)
    settings = DEFAULT_SETTINGS.split(",")
    data, extra = load_half(path, settings, "tune")
    table: dict[str, dict[str, list[float]]] = {}
    for variant in args.variants.split(","):
        for setting in settings:
            for seed in (int(s) for s in args.seeds.split(",")):
                given = setting_labels(data, setting, seed, extra)
                config = DynaCorConfig(seed=seed).replace(**variant_changes(variant))
                result = run(config, data.with_labels(given))
                f1 = 100 * result.metrics["f1"]
                table.setdefault(variant, {}).setdefault(setting, []).append(f1)
                print(json.dumps({"variant": variant, "setting": setting, "seed": seed, "f1": round(f1, 2),
                                  "chosen_epoch": result.chosen_epoch}), flush=True)  # fmt: skip
    print("\n" + f1_by_setting(table, settings, "variant"))


if __name__ == "__main__":
    main()
