"""Every contract of the hooks s2-lora implements (see paperkit.testing.ConformanceSuite; Ctrl-C + --resume
bit-exactness included), and the same with dropout (random masks) and the LoRA-style start."""

from pathlib import Path

from paperkit.testing import ConformanceSuite, assert_same_run, interrupt_and_resume


class TestConformance(ConformanceSuite):
    key = "s2-lora"
    options = {"rank": 4, "l1": 0.01}


WITH_DROPOUT = """
[run]
name = "s2-lora-resume"
seeds = [0]
epochs = 1
max_steps = 6
batch_size = 32
save_model = true

[task]
name = "digits"

[model]
name = "mlp"
depth = 2
width = 32

[optimize]
use = "adamw"
lr = 0.01

[adapt]
use = "s2-lora"
rank = 4
init = "lora"
dropout = 0.1
l1 = 0.01
"""


def test_dropout_and_shared_factors_resume_bit_exactly(tmp_path: Path) -> None:
    path = tmp_path / "plan.toml"
    path.write_text(WITH_DROPOUT, encoding="utf-8")
    reference, resumed = interrupt_and_resume(path, tmp_path, at_step=3)
    assert reference.results["steps"] == 6
    assert_same_run(reference, resumed)
