"""The start-up reference: a hand-written Accelerate loop for the quickstart's work, to its first step.

Run as a fresh process by ``startup.py``: import torch and Accelerate, load
digits, build the MLP (2×128) and AdamW (lr 0.002) as ``examples/quickstart.toml``
does, evaluate, take one optimizer step, evaluate again. ``paperkit run`` on
the quickstart with ``run.max_steps=1`` does the same work plus its run
directory and report.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

if __name__ == "__main__":
    import shutil

    from engine_overhead import SCRATCH, hand_runner

    try:
        hand_runner(128, 2, 1, 64, lr=0.002, max_steps=1, save=False)()
    finally:
        shutil.rmtree(SCRATCH, ignore_errors=True)
