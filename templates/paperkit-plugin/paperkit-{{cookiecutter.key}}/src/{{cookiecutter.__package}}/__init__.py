"""paperkit plugin: {{ cookiecutter.paper_title }} ({{ cookiecutter.year }}).

This module holds only the record and its config (no torch): ``paperkit
plugins`` imports it to list the method. The math lives in
:mod:`{{ cookiecutter.__package }}.functional`; :mod:`{{ cookiecutter.__package }}.hooks`
wires it to the engine.
"""

from __future__ import annotations

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option
{% set hooks = cookiecutter.hooks.replace(' ', '').split(',') %}

@attrs.define
class {{ cookiecutter.__class }}Config:
    """The method's options. Each default says where it comes from (paper section or table, reference code).

    The values below belong to the template's examples; replace them with the paper's.
    """
{%- if 'init' in hooks %}

    gain: float = option(
        1.0, help="Each weight is drawn from N(0, (gain / sqrt(fan_in))^2), biases are zero "
        "(LeCun normal; the template's example init).", validator=v.gt(0.0),
    )
{%- endif %}
{%- if 'optimize' in hooks %}

    lr: float = option(0.1, help="Learning rate (the template's example: heavy-ball momentum).", validator=v.gt(0.0))
    momentum: float = option(0.9, help="Momentum mu of v <- mu v + g (Polyak, 1964).", validator=[v.ge(0.0), v.lt(1.0)])
{%- endif %}
{%- if 'regularize' in hooks %}

    weight: float = option(1e-4, help="Weight of the squared-norm term weight * sum ||p||^2 (the template's example).", validator=v.ge(0.0))
{%- endif %}
{%- if 'loss' in hooks %}

    temperature: float = option(
        1.0, help="Logits are divided by T before the cross-entropy (the template's example loss).", validator=v.gt(0.0)
    )
{%- endif %}
{%- if 'after_step' in hooks %}

    every: int = option(10, help="Measure (and log) every this many steps (the template's example diagnostic).", validator=v.ge(1))
{%- endif %}
{%- if 'continual_step' in hooks %}

    noise_std: float = option(0.1, help="Std of the Gaussian noise added to each training input (the template's example).", validator=v.ge(0.0))
{%- endif %}


PAPER = Paper(
    title="{{ cookiecutter.paper_title }}",
    year={{ cookiecutter.year }},
    arxiv={% if cookiecutter.arxiv_id %}"{{ cookiecutter.arxiv_id }}"{% else %}None{% endif %},
    authors="",  # the paper's authors, as on its first page
    venue="",  # e.g. "NeurIPS"
)

method = Method(
    key="{{ cookiecutter.key }}",
    summary="{{ cookiecutter.paper_title }}: say in one sentence what the method does.",
    paper=PAPER,
    hooks=({% for hook in hooks %}"{{ hook }}"{{ ", " if not loop.last }}{% endfor %}{{ "," if hooks|length == 1 }}),
    implementation="{{ cookiecutter.__package }}.hooks:{{ cookiecutter.__class }}",
    config={{ cookiecutter.__class }}Config,
    {%- set touches = [] %}
    {%- if 'init' in hooks or 'adapt' in hooks or 'optimize' in hooks %}{% set _ = touches.append("parameters") %}{% endif %}
    {%- if 'optimize' in hooks %}{% set _ = touches.append("optimizer") %}{% endif %}
    {%- if 'regularize' in hooks or 'loss' in hooks %}{% set _ = touches.append("loss") %}{% endif %}
    {%- if 'evaluate' in hooks or 'after_step' in hooks or 'after_run' in hooks %}{% set _ = touches.append("metrics") %}{% endif %}
    {%- if 'continual_step' in hooks %}{% set _ = touches.append("data") %}{% endif %}
    touches=({% for t in touches %}"{{ t }}"{{ ", " if not loop.last }}{% endfor %}{{ "," if touches|length == 1 }}),
    exclusive=({% if 'optimize' in hooks %}"optimizer",{% endif %}),
    license="{{ cookiecutter.license }}",  # SPDX id; note the reference code's license in the card where it binds users
{%- if 'loss' in hooks %}
    honours=("target", "weight"),  # the loss reads soft targets and per-sample weights (paperkit.BATCH_KEYS)
{%- endif %}
{%- if 'continual_step' in hooks %}
    batch_keys=("x",),  # the batch keys the transform rewrites
{%- endif %}
    claims=(
        Claim(
            id="headline",
            statement="State the paper's headline claim here, in brief, with where it is made (abstract, Sec. N).",
            plan="{{ cookiecutter.__package }}:claims/headline.toml",
            metric="classification/accuracy",
            variant="{{ cookiecutter.key }}",
            baseline="baseline",
            direction="higher",
            margin=0.0,
            seeds=(0, 1, 2),
            quick=("run.epochs=2",),
            quick_seeds=(0, 1),
        ),
    ),
)

__all__ = ["{{ cookiecutter.__class }}Config", "PAPER", "method"]
