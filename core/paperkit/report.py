"""report.md and PNG plots for run and study directories.

A run's report shows its final metrics, training-loss curve, per-step curves of
whatever methods recorded from ``after_step`` or ``regularize`` (metrics.jsonl
keys namespaced ``<key>/<name>``), the accuracy matrix as a heatmap for streams,
and the provenance (versions, plan fingerprint, command). A study's report
compares the variants: the summary table over seeds, training curves per
variant (mean with a ±1 std band over seeds), per-step curves the same way,
each variant's mean accuracy matrix, and the final metrics with their
intervals and the seeds as dots.

Plots use matplotlib's object API with the Agg canvas (no pyplot state, no
display needed). Everything here reads files, so reports can be rebuilt from
existing directories.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from paperkit.runio import atomic_write_text

#: Fields of a metrics.jsonl step record that are bookkeeping, not curves.
BAND_ALPHA = 0.2


# -- reading ----------------------------------------------------------------------
def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl records; a truncated last line (a killed run) is skipped."""
    out = []
    try:
        lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def step_series(records: list[dict[str, Any]]) -> dict[str, dict[int, float]]:
    """``{name: {step: value}}`` for the loss and every namespaced per-step value."""
    series: dict[str, dict[int, float]] = {}
    for rec in records:
        if "event" in rec or "step" not in rec:
            continue
        for name, value in rec.items():
            if (name == "loss" or "/" in name) and _finite(value):
                series.setdefault(name, {})[int(rec["step"])] = float(value)
    return series


def experience_ends(records: list[dict[str, Any]]) -> list[int]:
    """Steps at which an experience ended (evaluation events), for vertical guides."""
    return sorted({int(r["step"]) for r in records if r.get("event") == "evaluation" and "step" in r})


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "metric"


# -- plotting ---------------------------------------------------------------------
def _figure(nrows: int = 1, ncols: int = 1, width: float = 6.4, height: float = 3.6) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=100)
    return path


def band_curve(runs: Sequence[dict[int, float]]) -> tuple[list[int], list[float], list[float]]:
    """Mean and std over runs at every step any run logged (std 0 where one run did)."""
    steps = sorted({s for run in runs for s in run})
    means, stds = [], []
    for s in steps:
        vals = [run[s] for run in runs if s in run]
        m = sum(vals) / len(vals)
        means.append(m)
        stds.append(math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0)
    return steps, means, stds


def plot_curves(
    groups: dict[str, list[dict[int, float]]], path: Path, title: str, ylabel: str, guides: Iterable[int] = ()
) -> Path:
    """One line per group (mean over its runs) with a ±1 std band; a single run is a plain line."""
    fig, (ax,) = _figure()
    log = ylabel == "loss" and _spans_decade(groups)
    for label, runs in groups.items():
        steps, mean, std = band_curve(runs)
        if not steps:
            continue
        (line,) = ax.plot(steps, mean, label=f"{label} (n={len(runs)})" if len(groups) > 1 or len(runs) > 1 else label)
        if len(runs) > 1:
            low = [m - s for m, s in zip(mean, std)]
            if log:  # a log axis cannot show mean − std <= 0: stop the band at the lowest seed's value
                low = [max(lo, min(r[st] for r in runs if st in r)) for lo, st in zip(low, steps)]
            ax.fill_between(
                steps, low, [m + s for m, s in zip(mean, std)], color=line.get_color(), alpha=BAND_ALPHA, linewidth=0
            )
    for g in guides:
        ax.axvline(g, color="0.7", linewidth=0.8, linestyle="--")
    ax.set_title(title)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    if len(groups) > 1 or any(len(r) > 1 for r in groups.values()):
        ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _spans_decade(groups: dict[str, list[dict[int, float]]]) -> bool:
    """A log scale helps only when positive values span more than a factor of ten."""
    values = [v for runs in groups.values() for run in runs for v in run.values()]
    return bool(values) and min(values) > 0 and max(values) / min(values) > 10


def plot_matrices(matrices: dict[str, list[list[float]]], path: Path, title: str) -> Path:
    """Accuracy-matrix heatmaps R[i][j] (row: after training on experience i; column: tested on j)."""
    n = len(matrices)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    size = max(3.2, 0.55 * max(len(R) for R in matrices.values()) + 1.6)
    fig, axes = _figure(nrows, ncols, width=size + 0.8, height=size)
    image = None
    for ax, (label, R) in zip(axes, matrices.items()):
        image = ax.imshow(R, vmin=0.0, vmax=1.0, cmap="viridis")
        T = len(R)
        if T <= 12:
            for i in range(T):
                for j in range(len(R[i])):
                    ax.text(
                        j,
                        i,
                        f"{R[i][j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if R[i][j] < 0.6 else "black",
                    )
        ax.set_xticks(range(len(R[0])))
        ax.set_yticks(range(T))
        ax.set_xlabel("tested on experience j")
        ax.set_ylabel("after training on experience i")
        ax.set_title(label)
    for ax in axes[n:]:
        ax.set_visible(False)
    if image is not None:
        fig.colorbar(image, ax=axes[:n], shrink=0.8, label="accuracy")
    fig.suptitle(title)
    return _save(fig, path)


def plot_finals(summary: dict[str, Any], path: Path) -> Path:
    """Per metric: every seed as a dot, each variant's mean as a bar and ±1 std as an error bar.

    The intervals (which with two or three seeds are wide) are in the tables;
    the plot shows the data themselves.
    """
    names = [m for m in summary["metrics"] if any(m in summary["arms"][v] for v in summary["variants"])]
    ncols = min(len(names), 3)
    nrows = math.ceil(len(names) / ncols)
    labels = summary["variants"]
    fig, axes = _figure(nrows, ncols, width=max(3.2, 1.1 * len(labels) + 1.2), height=3.2)
    for ax, name in zip(axes, names):
        shown: list[float] = []
        for x, label in enumerate(labels):
            arm = summary["arms"][label].get(name)
            if arm is None:
                continue
            color = f"C{x % 10}"
            ax.hlines(arm["mean"], x - 0.3, x + 0.3, color=color, linewidth=2.5)
            if arm["std"] is not None:
                ax.errorbar(x, arm["mean"], yerr=arm["std"], color="black", capsize=4, linewidth=1)
                shown += [arm["mean"] - arm["std"], arm["mean"] + arm["std"]]
            k = len(arm["values"])
            ax.scatter(
                [x + 0.2 * (i - (k - 1) / 2) / max(k - 1, 1) for i in range(k)],
                arm["values"],
                color=color,
                edgecolor="black",
                s=16,
                zorder=3,
            )
            shown += list(arm["values"])
        _tight_ylim(ax, shown)
        ax.set_xlim(-0.6, len(labels) - 0.4)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=20 if len(labels) > 3 else 0)
        ax.set_title(name, fontsize="medium")
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    fig.suptitle("final metrics over seeds: mean (bar), ±1 std, each seed (dot)")
    return _save(fig, path)


def _tight_ylim(ax: Any, values: list[float]) -> None:
    """Zoom on the data: differences between close arms must stay visible."""
    if not values:
        return
    lo, hi = min(values), max(values)
    pad = max((hi - lo) * 0.15, abs(hi) * 0.01, 1e-6)
    ax.set_ylim(lo - pad, hi + pad)


# -- run report -------------------------------------------------------------------
def write_run_report(run_dir: Path) -> Path:
    """``report.md`` (and its plots) for one run directory; returns the report's path."""
    run_dir = Path(run_dir)
    results = read_json(run_dir / "results.json")
    manifest = read_json(run_dir / "manifest.json")
    records = read_metrics(run_dir)
    series = step_series(records)
    guides = experience_ends(records)[:-1]
    variant = results.get("variant") or manifest.get("variant")
    title = (
        f"{results.get('plan', run_dir.name)}"
        + (f" — variant {variant}" if variant else "")
        + f", seed {results.get('seed', manifest.get('seed', '?'))}"
    )
    lines = [f"# Run: {title}", ""]
    lines += [f"Status **{results.get('status', 'unknown')}**" + _run_facts(results), ""]
    if results.get("error"):
        lines += [f"Error: `{results['error']}`", ""]
    plots: list[tuple[str, str]] = []
    if "loss" in series:
        what = f"training loss: {manifest['loss']}" if manifest.get("loss") else "training loss"
        plots.append((what, plot_curves({"loss": [series["loss"]]}, run_dir / "loss.png", what, "loss", guides).name))
    for key, names in _namespaces(series).items():
        path = _plot_namespace(
            {n: {"run": [series[n]]} for n in names}, run_dir / f"steps_{slug(key)}.png", key, guides
        )
        plots.append((f"per-step values of {key}", path.name))
    headline = (results.get("headline") or {}).get("metric", "classification/accuracy")
    caption = "accuracy matrix" if headline == "classification/accuracy" else f"matrix of {headline}"
    if results.get("accuracy_matrix"):
        plots.append(
            (
                caption,
                plot_matrices({"R[i][j]": results["accuracy_matrix"]}, run_dir / "accuracy_matrix.png", caption).name,
            )
        )
    final = results.get("final") or {}
    if final:
        lines += ["## Final metrics", "", "| metric | value |", "|---|---:|"]
        lines += [f"| {k} | {_num(v)} |" for k, v in final.items()]
        lines.append("")
    stream = {
        k: results.get(k)
        for k in ("average_accuracy", "forgetting", "backward_transfer", "forward_transfer")
        if k in results
    }
    if stream:
        lines += ["## Stream metrics", "", "| metric | value |", "|---|---:|"]
        lines += [f"| {k} | {_num(v)} |" for k, v in stream.items()]
        lines += ["", *_matrix_table(results["accuracy_matrix"], headline), ""]
    if results.get("summary"):
        lines += [
            "## Method summaries (after_run)",
            "",
            "```json",
            json.dumps(results["summary"], indent=2, default=str),
            "```",
            "",
        ]
    if plots:
        lines += ["## Plots", ""]
        for caption, name in plots:
            lines += [f"### {caption}", "", f"![{caption}]({name})", ""]
    lines += _provenance(manifest)
    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(lines).rstrip() + "\n")
    return path


def _run_facts(results: dict[str, Any]) -> str:
    facts = []
    if "steps" in results:
        facts.append(f"{results['steps']} optimizer steps")
    if _finite(results.get("wall_time_s")):
        facts.append(f"{results['wall_time_s']:.1f} s")
    if _finite(results.get("samples_per_s")):
        facts.append(f"{results['samples_per_s']:,.0f} samples/s")
    return (": " + ", ".join(facts)) if facts else ""


def _namespaces(series: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name in sorted(series):
        if "/" in name:
            out.setdefault(name.split("/", 1)[0], []).append(name)
    return out


def _plot_namespace(
    by_name: dict[str, dict[str, list[dict[int, float]]]], path: Path, key: str, guides: Sequence[int]
) -> Path:
    """One axes per ``<key>/<name>`` series, each with one band per group."""
    names = list(by_name)
    fig, axes = _figure(len(names), 1, height=2.8)
    for ax, name in zip(axes, names):
        groups = by_name[name]
        for label, runs in groups.items():
            steps, mean, std = band_curve(runs)
            (line,) = ax.plot(steps, mean, label=label, marker="." if len(steps) < 30 else None)
            if len(runs) > 1:
                ax.fill_between(
                    steps,
                    [m - s for m, s in zip(mean, std)],
                    [m + s for m, s in zip(mean, std)],
                    color=line.get_color(),
                    alpha=BAND_ALPHA,
                    linewidth=0,
                )
        for g in guides:
            ax.axvline(g, color="0.7", linewidth=0.8, linestyle="--")
        ax.set_ylabel(name.split("/", 1)[1])
        ax.grid(alpha=0.3)
        if len(groups) > 1:
            ax.legend(fontsize="small")
    axes[-1].set_xlabel("optimizer step")
    fig.suptitle(f"per-step values recorded by {key}")
    return _save(fig, path)


def _matrix_table(R: list[list[float]], metric: str = "classification/accuracy") -> list[str]:
    head = "| after \\ on | " + " | ".join(f"exp {j}" for j in range(len(R[0]))) + " |"
    sep = "|---|" + "---:|" * len(R[0])
    what = "Accuracy matrix" if metric == "classification/accuracy" else f"Matrix of {metric}"
    return [
        f"{what} R[i][j] (row: after training on experience i; column: tested on experience j):",
        "",
        head,
        sep,
        *[f"| exp {i} | " + " | ".join(f"{v:.3f}" for v in row) + " |" for i, row in enumerate(R)],
    ]


def _provenance(manifest: dict[str, Any]) -> list[str]:
    if not manifest:
        return []
    lines = ["## Provenance", ""]
    for key in ("plan_file", "plan_fingerprint", "device", "num_processes", "started", "command"):
        if key in manifest:
            lines.append(f"- {key}: `{manifest[key]}`")
    if manifest.get("versions"):
        lines.append("- versions: " + ", ".join(f"{k} {v}" for k, v in manifest["versions"].items()))
    lines += [
        "",
        "Files: `plan.toml` (as run), `resolved.toml` (defaults filled in), `metrics.jsonl`, `results.json`, `manifest.json`.",
        "",
    ]
    return lines


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


# -- study report -----------------------------------------------------------------
def _labelled_losses(
    groups: dict[str, list[dict[int, float]]], runs: Sequence[Any]
) -> tuple[dict[str, list[dict[int, float]]], str]:
    """The loss curves per arm, each labelled by what its loss measures when the arms' losses differ (a
    mixed-target or regularized loss is not plain cross-entropy); with one measure for all, that measure."""
    measures: dict[str, str] = {}
    for r in runs:
        described = read_json(Path(r.run_dir) / "manifest.json").get("loss")
        if described:
            measures.setdefault(r.label, described)
    if len(set(measures.values())) <= 1:
        return groups, next(iter(measures.values()), "")
    return {f"{label}: {measures[label]}" if label in measures else label: c for label, c in groups.items()}, ""


def write_study_report(
    directory: Path, summary: dict[str, Any], runs: Sequence[Any], verification: dict[str, Any] | None = None
) -> Path:
    """``report.md`` and plots for a study (or a comparison) directory; returns the report's path.

    ``runs`` are :class:`paperkit.study.RunRecord` objects; their run
    directories provide the per-step curves.
    """
    directory = Path(directory)
    done = [r for r in runs if r.completed]
    per_run = {id(r): read_metrics(r.run_dir) for r in done}
    curves: dict[str, dict[str, list[dict[int, float]]]] = {}
    for r in done:
        for name, points in step_series(per_run[id(r)]).items():
            curves.setdefault(name, {}).setdefault(r.label, []).append(points)
    guides = experience_ends(per_run[id(done[0])])[:-1] if done else []
    plots: list[tuple[str, str]] = []
    if summary["metrics"]:
        plots.append(("final metrics per variant", plot_finals(summary, directory / "final_metrics.png").name))
    if "loss" in curves:
        groups, measures = _labelled_losses(curves["loss"], done)
        title = "training loss (mean ± 1 std over seeds)" + (f": {measures}" if measures else "")
        plots.append((title, plot_curves(groups, directory / "loss.png", title, "loss", guides).name))
    for key, names in _namespaces(curves).items():
        path = _plot_namespace({n: curves[n] for n in names}, directory / f"steps_{slug(key)}.png", key, guides)
        plots.append((f"per-step values of {key} (mean ± std over seeds)", path.name))
    matrices = _mean_matrices(done)
    if matrices:
        plots.append(
            (
                "accuracy matrices (mean over seeds)",
                plot_matrices(matrices, directory / "accuracy_matrix.png", "accuracy matrix, mean over seeds").name,
            )
        )
    lines = [f"# Study: {summary.get('name', directory.name)}", ""]
    lines += _study_facts(summary)
    if verification:
        lines += verification_lines(verification)
    lines += summary_table(summary)
    for caption, name in plots:
        lines += [f"## {caption}", "", f"![{caption}]({name})", ""]
    lines += ["## Runs", "", "| variant | seed | status | run directory |", "|---|---:|---|---|"]
    for r in runs:
        rel = _relative(r.run_dir, directory)
        lines.append(f"| {r.label} | {r.seed} | {r.status} | [{rel}]({rel}/report.md) |")
    lines.append("")
    path = directory / "report.md"
    atomic_write_text(path, "\n".join(lines).rstrip() + "\n")
    return path


def _relative(path: Path, base: Path) -> str:
    try:
        return Path(path).resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return Path(path).as_posix()


def _study_facts(summary: dict[str, Any]) -> list[str]:
    facts = [f"Variants: {', '.join(summary['variants'])}"]
    if summary.get("seeds"):
        facts.append(f"seeds: {', '.join(map(str, summary['seeds']))}")
    if summary.get("baseline"):
        facts.append(f"baseline: **{summary['baseline']}**")
    if summary.get("plan_file"):
        facts.append(f"plan: `{Path(summary['plan_file']).name}`")
    if summary.get("created"):
        facts.append(f"created {summary['created']}")
    failed = [r for r in summary.get("runs", []) if r["status"] != "completed"]
    if failed:
        facts.append(f"**{len(failed)} run(s) did not complete** (see Runs)")
    return ["; ".join(facts) + ".", ""]


def summary_table(summary: dict[str, Any]) -> list[str]:
    """The comparison as a markdown table (same content as the terminal table)."""
    conf = f"{summary['confidence']:.0%}"
    baseline = summary.get("baseline")
    head = f"| metric | variant | n | mean ± std | {conf} CI |"
    sep = "|---|---|---:|---:|---:|"
    if baseline:
        head += f" Δ vs {baseline} | Δ {conf} CI | test |"
        sep += "---:|---:|---|"
    lines = ["## Results over seeds", "", head, sep]
    from paperkit.stats import fmt_interval, fmt_mean_std

    for name in summary["metrics"]:
        for label in summary["variants"]:
            arm = summary["arms"].get(label, {}).get(name)
            if arm is None:
                continue
            row = f"| {name} | {label}{' (baseline)' if label == baseline else ''} | {arm['n']} | {fmt_mean_std(arm['mean'], arm['std'])} | {fmt_interval(arm['low'], arm['high'])} |"
            if baseline:
                d = summary["differences"].get(label, {}).get(name)
                row += (
                    f" {d['difference']:+.4f} | {fmt_interval(d['low'], d['high'], signed=True)} | {d['test']} |"
                    if d
                    else " | | |"
                )
            lines.append(row)
    lines += [
        "",
        "Intervals are t intervals over seeds; differences are paired by seed when both arms ran the same seeds (paired-t), Welch otherwise.",
        "",
    ]
    return lines


def verification_lines(data: dict[str, Any]) -> list[str]:
    """The claim, what was measured and the verdict, for the top of a verification study's report."""
    from paperkit.evidence import Verification

    record = Verification.from_dict(data)
    variant, baseline = record.arm("variant"), record.arm("baseline")
    lines = [f"## Claim `{record.claim}` of `{record.key}`: **{record.verdict}**", ""]
    lines += [f"> {record.statement}", ""]
    lines += [
        f"Checked: `{record.metric}` of `{variant.name}` vs `{baseline.name}`, "
        f"{record.direction} is better, margin {record.margin:+g}, {record.confidence:.0%} confidence"
        f"{' (quick budget)' if record.quick else ''}.",
        "",
    ]
    if record.budget:
        lines += [
            f"Budget of each arm: {record.budget_text(per_experience=True)}"
            + (f"; overrides {', '.join(record.overrides)}" if record.overrides else "")
            + ".",
            "",
        ]
    for role, arm in (("variant", variant), ("baseline", baseline)):
        lines.append(f"- {role} `{arm.name}`: {arm.mean_std()} (n={arm.n}, seeds {list(arm.seeds)})")
    if record.difference is not None:
        lines.append(
            f"- difference ({variant.name} − {baseline.name}): {record.difference:+.4f}, "
            f"interval {record.interval_text()}"
        )
    lines += ["", f"Verdict: **{record.verdict}** — {record.reason}.", ""]
    return lines


def _mean_matrices(runs: Sequence[Any]) -> dict[str, list[list[float]]]:
    groups: dict[str, list[list[list[float]]]] = {}
    for r in runs:
        R = r.results.get("accuracy_matrix")
        if R:
            groups.setdefault(r.label, []).append(R)
    out = {}
    for label, Rs in groups.items():
        shape = (len(Rs[0]), len(Rs[0][0]))
        same = [R for R in Rs if (len(R), len(R[0])) == shape]
        out[label] = [[sum(R[i][j] for R in same) / len(same) for j in range(shape[1])] for i in range(shape[0])]
    return out
