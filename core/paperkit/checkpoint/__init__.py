"""Reliability of a run: checkpoints, resume, Ctrl-C, and the divergence guard.

A run that dies at 90% must not cost the run. The engine writes
``<run_dir>/checkpoint.safetensors`` at every experience and epoch boundary,
every ``run.checkpoint_every`` optimizer steps when asked, and when Ctrl-C
stops it; ``paperkit run PLAN --resume RUN_DIR`` continues from there and ends
with exactly the metrics an uninterrupted run has (bit for bit on CPU).

What a checkpoint holds: the model, the optimizer and the learning-rate
scheduler of the experience in progress, every method's state
(``state_dict``/``load_state_dict`` on the implementation object), every random
number generator of every process (torch CPU and CUDA, Python's ``random``,
NumPy), and the position (experience, step within it, steps, the evaluations
done so far, how far ``metrics.jsonl`` got). The order of the training data is
not state: each experience's batches are drawn from a generator seeded by the
run seed, so the resumed run recomputes the same order and skips the batches
already consumed.

The format is safe to open: one safetensors file whose tensors hold every array
and whose header holds the rest as JSON (nothing is unpickled), with a SHA-256
over both, so a truncated or edited file is a one-line error. It is written to
a temporary name and renamed, so a crash while writing leaves the previous
checkpoint intact. A completed run deletes its checkpoint (``model.safetensors``
is the result).

Resume refuses a run directory whose plan (apart from bookkeeping such as
``run.output`` and ``run.checkpoint_every``), plugin versions or number of
processes differ from the ones asked now, naming the first difference; it never
skips state silently.
"""

from __future__ import annotations

from paperkit.checkpoint.codec import (
    BOOKKEEPING,
    FILE,
    FORMAT,
    FORMAT_VERSION,
    decode,
    encode,
    read_file,
    round_trip,
    write_file,
)
from paperkit.checkpoint.guard import (
    RunInterrupted,
    StopFlag,
    check_loss,
    check_parameters,
    floating_parameters,
)
from paperkit.checkpoint.resume import (
    Resume,
    distributions,
    first_difference,
    open_for_resume,
    resume_job,
    resume_view,
)
from paperkit.checkpoint.saving import (
    Checkpointer,
    prepare_run_dir,
)
from paperkit.checkpoint.state import (
    RunState,
    rng_state,
    set_rng_state,
)

__all__ = [
    "BOOKKEEPING",
    "Checkpointer",
    "FILE",
    "FORMAT",
    "FORMAT_VERSION",
    "Resume",
    "RunInterrupted",
    "RunState",
    "StopFlag",
    "check_loss",
    "check_parameters",
    "decode",
    "distributions",
    "encode",
    "first_difference",
    "floating_parameters",
    "open_for_resume",
    "prepare_run_dir",
    "read_file",
    "resume_job",
    "resume_view",
    "rng_state",
    "round_trip",
    "set_rng_state",
    "write_file",
]
