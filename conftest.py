"""Settings for every test session in this repository (the core's tests and every plugin's).

Tests run at one torch intra-op thread, as the published verification table and the per-plugin time
budget do. CPU reductions split their work by thread, so a thread count that depended on the machine,
or on which test ran earlier in the same worker, would let comparisons that are exact at one count
(kill + resume against an uninterrupted run, parity with a reference implementation) drift by float
rounding at another. Subprocesses (``paperkit run`` started by a test, torchrun) get the same count
through ``OMP_NUM_THREADS``. ``PAPERKIT_TEST_THREADS`` sets another count on purpose.
"""

from __future__ import annotations

import os


def pytest_configure(config: object) -> None:
    threads = int(os.environ.get("PAPERKIT_TEST_THREADS", "1"))
    os.environ["OMP_NUM_THREADS"] = str(threads)  # the runs tests start in subprocesses use the same count
    import torch

    torch.set_num_threads(threads)
