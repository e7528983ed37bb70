"""Every contract of the hooks bone implements (see paperkit.testing.ConformanceSuite), and Ctrl-C + --resume
bit-exactness for the shared structure with its dropout (random masks) too."""

from pathlib import Path

from paperkit.testing import ConformanceSuite, assert_same_run, interrupt_and_resume


class TestConformance(ConformanceSuite):
    key = "bone"
    options = {"rank": 8}


SHARED_WITH_DROPOUT = """
[run]
name = "bone-resume"
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
use = "bone"
rank = 8
structure = "shared"
dropout = 0.1
"""


def test_shared_structure_with_dropout_resumes_bit_exactly(tmp_path: Path) -> None:
    path = tmp_path / "plan.toml"
    path.write_text(SHARED_WITH_DROPOUT, encoding="utf-8")
    reference, resumed = interrupt_and_resume(path, tmp_path, at_step=3)
    assert reference.results["steps"] == 6
    assert_same_run(reference, resumed)
