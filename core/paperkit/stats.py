"""Statistics over seeds: per-arm summaries, differences of means, and claim verdicts.

Pure Python (no torch, no numpy needed) so studies, ``paperkit compare`` and
the docs can use it anywhere. Quantiles of Student's t come from scipy when it
is importable (it always is where scikit-learn is, and paperkit depends on
scikit-learn); otherwise from a small incomplete-beta implementation that the
tests check against scipy.

How a claim is decided (see :func:`decide`)
-------------------------------------------

Let ``A`` be the method's arm and ``B`` the baseline, each one metric value
per seed, and ``s = +1`` for direction ``higher`` and ``-1`` for ``lower``.
The *effect* is ``d = s · (mean(A) − mean(B))``: positive means "better in the
claimed direction". The claim says ``d > margin`` (a margin of 0 says "better";
a positive margin "better by at least margin"; a negative margin "at most
|margin| worse", i.e. non-inferiority). With a two-sided ``confidence``
interval ``[lo, hi]`` for ``d``:

* **supported**      when ``lo > margin`` — the whole interval clears the margin;
* **not supported**  when ``hi < margin`` — the whole interval falls short of it;
* **inconclusive**   otherwise (the interval contains the margin, including a
  bound exactly on it), and whenever an interval cannot be estimated: fewer
  than two seeds in an arm (or fewer than two shared seeds for a paired test).

Each one-sided conclusion therefore has error rate at most ``(1 − confidence)/2``.

Which interval (see :func:`difference`)
---------------------------------------

*Paired by seed* when both arms ran exactly the same seeds: in paperkit a seed
fixes the model's initial weights and the order of the training batches, so
the two runs of one seed share those sources of noise and the per-seed
difference ``A_i − B_i`` removes them. The interval is a one-sample t interval
over those ``n`` differences (``n − 1`` degrees of freedom). Otherwise the arms
are treated as independent and the interval is Welch's (unequal variances,
Welch–Satterthwaite degrees of freedom). When the spread is exactly zero the
interval collapses to the observed difference.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import attrs

VERDICTS: tuple[str, ...] = ("supported", "not supported", "inconclusive")


# -- Student's t ----------------------------------------------------------------------
def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (``df`` may be fractional)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if not df > 0:
        raise ValueError(f"df must be > 0, got {df}")
    try:
        from scipy.stats import t as student_t
    except ImportError:  # pragma: no cover - scipy ships with scikit-learn
        return _t_quantile_fallback(p, df)
    return float(student_t.ppf(p, df))


def _t_quantile_fallback(p: float, df: float) -> float:
    """Invert :func:`_t_cdf` by bisection (monotone, so 200 halvings are plenty)."""
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -_t_quantile_fallback(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _t_cdf(t: float, df: float) -> float:
    """P(T <= t) via the regularized incomplete beta: P(|T| > t) = I_{df/(df+t²)}(df/2, 1/2)."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b), by its continued fraction (modified Lentz)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x > (a + 1.0) / (a + b + 2.0):  # the fraction converges fast only below this point
        return 1.0 - _betainc(b, a, 1.0 - x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * result / a


# -- summaries ------------------------------------------------------------------------
@attrs.frozen
class Summary:
    """One arm over seeds: mean, sample standard deviation, a t interval for the mean.

    ``std``, ``low`` and ``high`` are ``None`` with a single value: one run
    says nothing about the spread.
    """

    mean: float
    std: float | None
    n: int
    low: float | None
    high: float | None
    values: tuple[float, ...]

    def as_dict(self) -> dict[str, object]:
        return {
            "mean": self.mean,
            "std": self.std,
            "n": self.n,
            "low": self.low,
            "high": self.high,
            "values": list(self.values),
        }


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def _std(values: Sequence[float]) -> float:
    """Sample standard deviation (n − 1 in the denominator)."""
    m = _mean(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / (len(values) - 1))


def summarize(values: Iterable[float], confidence: float = 0.95) -> Summary:
    """Mean, std and a ``confidence`` t interval for the mean of ``values`` (at least one)."""
    vals = tuple(float(v) for v in values)
    if not vals:
        raise ValueError("no values to summarize")
    n, mean = len(vals), _mean(vals)
    if n < 2:
        return Summary(mean, None, n, None, None, vals)
    std = _std(vals)
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n)
    return Summary(mean, std, n, mean - half, mean + half, vals)


@attrs.frozen
class Difference:
    """``variant − baseline`` in metric units with a ``confidence`` interval (``None`` if not estimable)."""

    difference: float
    low: float | None
    high: float | None
    test: str | None  # "paired-t", "welch-t" or None
    df: float | None
    n: int  # pairs for paired-t; the smaller arm for welch-t

    def as_dict(self) -> dict[str, object]:
        return {
            "difference": self.difference,
            "low": self.low,
            "high": self.high,
            "test": self.test,
            "df": self.df,
            "n": self.n,
        }

    def flipped(self) -> Difference:
        """``baseline − variant``: the effect when lower is better."""
        low, high = (-self.high if self.high is not None else None), (-self.low if self.low is not None else None)
        return Difference(-self.difference, low, high, self.test, self.df, self.n)


def difference(
    variant: Sequence[float],
    baseline: Sequence[float],
    confidence: float = 0.95,
    variant_seeds: Sequence[int] | None = None,
    baseline_seeds: Sequence[int] | None = None,
) -> Difference:
    """Difference of arm means with a paired (same seeds) or Welch t interval (see the module doc)."""
    if not variant or not baseline:
        raise ValueError("both arms need at least one value")
    diff = _mean(variant) - _mean(baseline)
    if _same_seeds(variant_seeds, baseline_seeds, len(variant), len(baseline)):
        by_seed = dict(zip(baseline_seeds, baseline))  # type: ignore[arg-type]
        pairs = [v - by_seed[s] for s, v in zip(variant_seeds, variant)]  # type: ignore[arg-type]
        return _paired(pairs, diff, confidence)
    return _welch(variant, baseline, diff, confidence)


def _same_seeds(a: Sequence[int] | None, b: Sequence[int] | None, na: int, nb: int) -> bool:
    if a is None or b is None or len(a) != na or len(b) != nb:
        return False
    return len(set(a)) == len(a) and set(a) == set(b)


def _paired(pairs: list[float], diff: float, confidence: float) -> Difference:
    n = len(pairs)
    if n < 2:
        return Difference(diff, None, None, "paired-t", None, n)
    sd = _std(pairs)
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * sd / math.sqrt(n) if sd > 0 else 0.0
    return Difference(diff, diff - half, diff + half, "paired-t", float(n - 1), n)


def _welch(a: Sequence[float], b: Sequence[float], diff: float, confidence: float) -> Difference:
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        return Difference(diff, None, None, "welch-t", None, min(na, nb))
    va, vb = _std(a) ** 2 / na, _std(b) ** 2 / nb
    se = math.sqrt(va + vb)
    if se == 0:
        return Difference(diff, diff, diff, "welch-t", None, min(na, nb))
    df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    half = t_quantile(0.5 + confidence / 2.0, df) * se
    return Difference(diff, diff - half, diff + half, "welch-t", df, min(na, nb))


# -- verdicts -------------------------------------------------------------------------
@attrs.frozen
class Decision:
    """A verdict, the effect it was computed from (in the claimed direction), and why."""

    verdict: str
    effect: Difference
    reason: str


def decide(diff: Difference, direction: str, margin: float, confidence: float = 0.95) -> Decision:
    """The verdict for "the variant beats the baseline by more than ``margin`` in ``direction``".

    ``diff`` is ``variant − baseline`` as :func:`difference` returns it; for
    ``lower`` it is flipped so that positive always means better.
    """
    if direction not in ("higher", "lower"):
        raise ValueError(f"direction must be 'higher' or 'lower', got {direction!r}")
    effect = diff if direction == "higher" else diff.flipped()
    better = "higher" if direction == "higher" else "lower"
    if effect.low is None or effect.high is None:
        reason = (
            f"an interval needs at least 2 seeds per arm ({'pairs' if effect.test == 'paired-t' else 'smallest arm'}: {effect.n}); "
            "one run per arm cannot separate the method from seed noise"
        )
        return Decision("inconclusive", effect, reason)
    interval = (
        f"the {confidence:.0%} interval [{effect.low:+.4f}, {effect.high:+.4f}] of the improvement ({better} is better)"
    )
    if effect.low > margin:
        return Decision("supported", effect, f"{interval} lies above the margin {margin:+g}")
    if effect.high < margin:
        return Decision("not supported", effect, f"{interval} lies below the margin {margin:+g}")
    return Decision(
        "inconclusive",
        effect,
        f"{interval} contains the margin {margin:+g}; more seeds or a larger budget could settle it",
    )


# -- formatting (terminal and Markdown tables) -----------------------------------------
def fmt_mean_std(mean: float, std: float | None) -> str:
    """``0.9123 ± 0.0042`` (the mean alone for one seed)."""
    return f"{mean:.4f} ± {std:.4f}" if std is not None else f"{mean:.4f}"


def fmt_interval(low: float | None, high: float | None, signed: bool = False) -> str:
    """``[0.8900, 0.9300]``; ``n/a (n<2)`` where one seed gives no interval."""
    if low is None or high is None:
        return "n/a (n<2)"
    f = "{:+.4f}" if signed else "{:.4f}"
    return f"[{f.format(low)}, {f.format(high)}]"
