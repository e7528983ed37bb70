"""Weight-norm growth of the runs of a study: the mechanism the AdamP paper is about.

For a scale-invariant weight the effective step size is ``lr / ‖w‖²`` (paper Sec. 2),
so the growth of ``‖w‖`` during training is a direct measure of how much the
optimizer has slowed itself down. For every run directory under the given study
directories (``paperkit verify``/``paperkit run`` output, with ``save_model = true``)
this reads the final weights, rebuilds the initial ones (the run's own
``plan.toml``, the variant applied, with ``run.train = false``: same seed, same initialization) and
prints, per variant and 2-D weight, the mean over seeds of

- ``‖W_T‖/‖W_0‖`` (Frobenius norm; per-row norms grow alike under BatchNorm), and
- ``(‖W_0‖/‖W_T‖)²``, the factor by which the effective step size of that weight
  has shrunk by the end of training.

    python plugins/paperkit-adamp/norm_growth.py STUDY_DIR [STUDY_DIR ...] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path
from statistics import mean

from paperkit import read_weights
from paperkit.testing import run_plan_file


def initial_weights(run_dir: Path, seed: int, scratch: Path) -> dict:
    """The run's weights before its first step: its own plan (the variant applied), same seed, no training."""
    result = run_plan_file(run_dir / "plan.toml", scratch, overrides=("run.train=false", "run.save_model=true"), seed=seed)
    return read_weights(Path(result.run_dir) / "model.safetensors")


def growth(study_dirs: list[Path]) -> dict[str, dict[str, dict[str, float]]]:
    """``{variant: {weight: {"norm_ratio", "step_shrink", "n"}}}`` over the runs found."""
    ratios: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    with tempfile.TemporaryDirectory() as scratch:
        for study in study_dirs:
            for run_dir in sorted(p for p in study.iterdir() if (p / "model.safetensors").is_file()):
                manifest = json.loads((run_dir / "manifest.json").read_text())
                final = read_weights(run_dir / "model.safetensors")
                start = initial_weights(run_dir, manifest["seed"], Path(scratch))
                for name, w in final.items():
                    if w.dim() == 2 and name in start:
                        ratios[manifest["variant"]][name].append((w.norm() / start[name].norm()).item())
    return {variant: {name: {"norm_ratio": mean(v), "step_shrink": mean(1.0 / r**2 for r in v), "n": len(v)}
                      for name, v in weights.items()} for variant, weights in ratios.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="+", type=Path)
    parser.add_argument("--json", type=Path, help="also write the table as JSON")
    args = parser.parse_args()
    table = growth(args.studies)
    for variant, weights in table.items():
        print(f"{variant}:")
        for name, row in weights.items():
            print(f"  {name:24s} |W_T|/|W_0| = {row['norm_ratio']:6.3f}   effective step x{row['step_shrink']:.3f}   (n={row['n']})")
    if args.json:
        args.json.write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
