"""Every contract of the hooks gt-self-distill implements (see paperkit.testing.ConformanceSuite).

The smoke plan runs a distillation round with the teacher active: the method's
entry distils from ``variant:round0``, a variant of the smoke plan that trains
on the labels alone (the engine runs it first), so the resume contract covers a
run whose loss reads a frozen teacher.
"""

from paperkit.testing import ConformanceSuite


class TestConformance(ConformanceSuite):
    key = "gt-self-distill"
    options = {"teacher": "variant:round0", "alpha": 0.5}
    plan_extra = '[run]\nsave_model = true\n[variants.round0.regularize]\nuse = "gt-self-distill"\n'
