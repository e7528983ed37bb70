"""Every contract of the hooks dota implements (see paperkit.testing.ConformanceSuite), for DoTA's MPO
initialization and, with a Ctrl-C + --resume run, for the random ablation (cores from the run's generator)."""

from pathlib import Path

from paperkit.testing import ConformanceSuite, assert_same_run, interrupt_and_resume


class TestConformance(ConformanceSuite):
    key = "dota"
    options = {"bond": 4, "cores": 2}


RANDOM = """
[run]
name = "dota-resume"
seeds = [0]
epochs = 1
max_steps = 6
batch_size = 32
save_model = true

[task]
name = "digits"

[model]
name = "mlp"
depth = 1
width = 32

[optimize]
use = "adamw"
lr = 0.01

[adapt]
use = "dota"
bond = 3
cores = 2
init = "random"
"""


def test_random_init_resumes_bit_exactly(tmp_path: Path) -> None:
    path = tmp_path / "plan.toml"
    path.write_text(RANDOM, encoding="utf-8")
    reference, resumed = interrupt_and_resume(path, tmp_path, at_step=3)
    assert reference.results["steps"] == 6
    assert_same_run(reference, resumed)
