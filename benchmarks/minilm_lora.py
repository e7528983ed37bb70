"""LoRA fine-tuning of the pretrained MiniLM: ``paperkit.engine.run`` against a hand-written transformers + PEFT loop.

Both sides do the same work: MiniLM (all-MiniLM-L6-v2) with a new head, PEFT-style LoRA (rank 8, alpha 16) on
every attention query and value projection, the head trained whole, the embedded sentiment sentences at batch 16
for the same number of AdamW steps, one evaluation of the test set before training and one after, and the
adapters written to disk. The hand loop is what a researcher writes with transformers and PEFT
(``peft.get_peft_model`` on the same ``BertModel``); the engine also writes its run directory and guards against
divergence, which is inside the measurement. Peak memory is the largest resident set of either side's process
while it runs (each side in a fresh process).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STEPS = 24
TARGETS = ["encoder.encoder.layer.*.attention.self.query", "encoder.encoder.layer.*.attention.self.value"]

PLAN = f"""
[run]
name = "bench-minilm"
seeds = [0]
epochs = 10
batch_size = 16
max_steps = {STEPS}
log_every = 50
save_model = false

[task]
name = "sentiment"
per_class = 120
max_length = 32

[model]
name = "minilm"
dropout = 0.0

[optimize]
use = "adamw"
lr = 0.001

[adapt]
use = "lora"
rank = 8
alpha = 16.0
target = {json.dumps(TARGETS)}
modules_to_save = ["head"]
"""


def engine() -> None:
    from paperkit.engine import run
    from paperkit.plan import load_plan
    from paperkit.registry import Registry

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plan.toml"
        path.write_text(PLAN, encoding="utf-8")
        registry = Registry()
        plan = load_plan(path, [f"run.output={json.dumps(str(Path(tmp) / 'runs'))}"], registry=registry)
        result = run(plan, 0, registry)
        assert result.results["steps"] == STEPS


def hand() -> None:
    import torch
    import torch.nn.functional as F
    from accelerate.utils import set_seed
    from peft import LoraConfig, get_peft_model

    from paperkit.models.minilm import load_minilm
    from paperkit.tasks import SentimentConfig
    from paperkit.tasks.sentences import sentiment

    task = sentiment(SentimentConfig(per_class=120, max_length=32))
    train, test = task.experiences[0].train, task.experiences[0].test
    set_seed(0)
    model = load_minilm(2, dropout=0.0)
    config = LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=r".*attention\.self\.(query|value)",
        modules_to_save=["head"],
    )
    model = get_peft_model(model, config)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)

    def evaluate() -> float:
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(x) for x in test.x.split(256)])
        model.train()
        return float((logits.argmax(-1) == test.y).float().mean())

    evaluate()
    generator, steps = torch.Generator().manual_seed(0), 0
    while steps < STEPS:  # epochs of shuffled batches of 16, as the engine draws them, until the step budget
        for ids in torch.randperm(len(train.x), generator=generator).split(16):
            if steps == STEPS:
                break
            loss = F.cross_entropy(model(train.x[ids]), train.y[ids])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
    evaluate()
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)


def measure(side: str) -> dict[str, float]:
    """Seconds and peak resident memory of one side, in a fresh process (one torch thread)."""
    code = (
        "import sys, time, resource, torch; torch.set_num_threads(1); sys.path.insert(0, 'benchmarks');"
        f"import minilm_lora as m; t = time.perf_counter(); m.{side}(); s = time.perf_counter() - t;"
        "print(s, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    seconds, rss_kb = out.stdout.split()[-2:]
    return {"s": float(seconds), "rss_mb": int(rss_kb) / 1024}


def compare(repeats: int = 3) -> dict[str, float]:
    """Seconds per run in this process, interleaved after a warm-up (imports and the model files cached on both
    sides: what is left is the runs' own work), and each side's peak memory in a fresh process."""
    import torch
    from common import interleaved

    torch.set_num_threads(1)
    timing = interleaved(engine, hand, repeats)
    memory = measure("engine"), measure("hand")
    return {
        "engine_s": timing["a_s"],
        "hand_s": timing["b_s"],
        "ratio": timing["ratio"],
        "ratio_q1": timing["ratio_q1"],
        "ratio_q3": timing["ratio_q3"],
        "engine_rss_mb": memory[0]["rss_mb"],
        "hand_rss_mb": memory[1]["rss_mb"],
        "steps": STEPS,
    }


if __name__ == "__main__":
    start = time.perf_counter()
    print(compare(), f"({time.perf_counter() - start:.0f} s)", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
