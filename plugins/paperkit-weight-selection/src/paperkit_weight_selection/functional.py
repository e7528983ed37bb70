"""Weight selection (Xu et al., ICLR 2024, the method section) as plain functions, usable without the engine.

A smaller *student* is initialized from a subset of a larger pretrained *teacher* of the same family
(the same module names, fewer layers and/or narrower tensors), in three steps (the paper's method section and Fig. 2;
the authors' ``weight_selection.py``):

1. **Layer selection.** Each student layer takes the weights of one teacher layer. The default is
   *first-N* selection: student layer ``i`` takes teacher layer ``i`` (in the reference code this is
   implicit: each student state-dict key is looked up under the same name in the teacher).
   ``"uniform"`` spaces the chosen layers evenly over the teacher's instead (the paper's ablation
   alternative; not in the reference code).
2. **Component mapping.** Each student tensor takes the teacher tensor with the same name
   (weights, biases, normalization parameters and buffers alike).
3. **Element selection.** Along every dimension of the tensor, ``s`` of the teacher's ``t`` indices are
   kept (:func:`uniform_indices`, the default; :func:`consecutive_indices`; :func:`random_indices`).
   Indices depend only on ``(t, s)``, so the output units kept in layer ``l`` are the input units kept
   in layer ``l + 1`` (and the channels of a residual stream are the same in every layer): the
   paper's *consistency*. ``random`` is consistent when one draw serves every tensor
   (:class:`ElementSelector` with ``consistent=True``).

The classifier head is left to the student's own initialization by default, as in the reference
code (the target data set usually differs from the teacher's).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

ELEMENT_SELECTIONS = ("uniform", "consecutive", "random")
LAYER_SELECTIONS = ("first-n", "uniform")


def uniform_indices(teacher_size: int, student_size: int) -> torch.Tensor:
    """The ``student_size`` evenly spaced indices of ``range(teacher_size)`` (uniform element selection).

    The reference code's rule (``uniform_element_selection`` in ``weight_selection.py``): when the
    student's size divides the teacher's, every ``step = t // s``-th index from 0 (``0, step, 2·step, …``);
    otherwise ``round(linspace(0, t − 1, s))`` in single precision, rounding halves to even as
    ``torch.round`` does. Example: 6 → 3 gives ``[0, 2, 4]``, 8 → 3 gives ``[0, 4, 7]``.
    """
    _check_sizes(teacher_size, student_size)
    if student_size == 0:
        return torch.zeros(0, dtype=torch.long)
    if teacher_size % student_size == 0:
        return torch.arange(student_size) * (teacher_size // student_size)
    return torch.round(torch.linspace(0, teacher_size - 1, student_size, dtype=torch.float32)).long()


def consecutive_indices(teacher_size: int, student_size: int) -> torch.Tensor:
    """The first ``student_size`` indices, ``0, 1, …, s − 1`` (the paper's "consecutive selection")."""
    _check_sizes(teacher_size, student_size)
    return torch.arange(student_size)


def random_indices(teacher_size: int, student_size: int, generator: torch.Generator) -> torch.Tensor:
    """``student_size`` distinct indices drawn uniformly from ``range(teacher_size)``, in increasing order
    (the paper's "random selection"); drawn on the CPU from ``generator``."""
    _check_sizes(teacher_size, student_size)
    return torch.randperm(teacher_size, generator=generator)[:student_size].sort().values


def _check_sizes(teacher_size: int, student_size: int) -> None:
    if student_size < 0 or teacher_size < 0:
        raise ValueError(f"sizes must be >= 0, got teacher {teacher_size} and student {student_size}")
    if student_size > teacher_size:
        raise ValueError(f"the teacher's size {teacher_size} is smaller than the student's {student_size}")


class ElementSelector:
    """Which teacher indices a student dimension keeps: ``indices(t, s)``.

    ``mode`` is one of :data:`ELEMENT_SELECTIONS`. ``uniform`` and ``consecutive`` are fixed functions
    of ``(t, s)`` and therefore consistent across layers. For ``random``, ``consistent=True`` draws one
    index set per ``(t, s)`` and reuses it for every tensor (the paper's "random selection with
    consistency"); ``consistent=False`` draws afresh for every dimension of every tensor ("without
    consistency", the paper's ablation that breaks the correspondence between layers). A dimension the
    student and the teacher share in size (``t == s``) always keeps every index in order.
    """

    def __init__(self, mode: str = "uniform", consistent: bool = True, generator: torch.Generator | None = None):
        if mode not in ELEMENT_SELECTIONS:
            raise ValueError(f"unknown element selection {mode!r} (known: {', '.join(ELEMENT_SELECTIONS)})")
        if mode == "random" and generator is None:
            raise ValueError("random element selection needs a generator")
        self.mode = mode
        self.consistent = consistent
        self.generator = generator
        self._drawn: dict[tuple[int, int], torch.Tensor] = {}

    def indices(self, teacher_size: int, student_size: int) -> torch.Tensor:
        if self.mode == "uniform":
            return uniform_indices(teacher_size, student_size)
        if self.mode == "consecutive" or teacher_size == student_size:
            return consecutive_indices(teacher_size, student_size)
        assert self.generator is not None
        if not self.consistent:
            return random_indices(teacher_size, student_size, self.generator)
        pair = (teacher_size, student_size)
        if pair not in self._drawn:
            self._drawn[pair] = random_indices(teacher_size, student_size, self.generator)
        return self._drawn[pair]


def select_elements(
    teacher: torch.Tensor, shape: Sequence[int], selector: ElementSelector | None = None
) -> torch.Tensor:
    """The sub-tensor of ``teacher`` of ``shape``: along each dimension ``d`` in turn, the indices
    ``selector.indices(teacher.shape[d], shape[d])`` (element selection; uniform by default).

    A 0-dimensional tensor (a batch-norm step counter) is returned as it is. The teacher must have as
    many dimensions as ``shape`` and be at least as large along each (a ``ValueError`` says which).
    """
    selector = selector or ElementSelector()
    if teacher.dim() != len(shape):
        raise ValueError(f"has {teacher.dim()} dimensions in the teacher and {len(shape)} in the student")
    for dim, (t, s) in enumerate(zip(teacher.shape, shape)):
        if t < s:
            raise ValueError(
                f"is {tuple(teacher.shape)} in the teacher, smaller than the student's {tuple(shape)} "
                f"in dimension {dim}; the teacher must be at least as large along every dimension"
            )
    out = teacher
    for dim, s in enumerate(shape):
        if out.shape[dim] != s:
            out = torch.index_select(out, dim, selector.indices(out.shape[dim], s).to(out.device))
    return out.clone() if out is teacher else out


def _containers(keys: Iterable[str]) -> dict[tuple[str, ...], int]:
    """For every numbered container (``nn.Sequential``/``nn.ModuleList`` path) among ``keys``, how many
    layers it holds (the largest index seen + 1)."""
    sizes: dict[tuple[str, ...], int] = {}
    for key in keys:
        parts = key.split(".")
        for position, part in enumerate(parts):
            if part.isdigit():
                prefix = tuple(parts[:position])
                sizes[prefix] = max(sizes.get(prefix, 0), int(part) + 1)
    return sizes


def map_layers(student_keys: Iterable[str], teacher_keys: Iterable[str], layers: str = "first-n") -> dict[str, str]:
    """The teacher key each student key takes its tensor from (layer selection and component mapping).

    ``"first-n"``: the same name (student layer ``i`` of every numbered container is teacher layer
    ``i``; the reference code's implicit rule). ``"uniform"``: layer ``i`` of a container with ``n_s``
    layers in the student and ``n_t`` in the teacher is teacher layer ``uniform_indices(n_t, n_s)[i]``
    (the paper's alternative; first-N is its default). A student key the teacher lacks is a
    ``ValueError`` naming it.
    """
    if layers not in LAYER_SELECTIONS:
        raise ValueError(f"unknown layer selection {layers!r} (known: {', '.join(LAYER_SELECTIONS)})")
    student_keys, teacher_keys = list(student_keys), set(teacher_keys)
    mapping: dict[str, str] = {}
    if layers == "first-n":
        mapping = {key: key for key in student_keys}
    else:
        student_sizes, teacher_sizes = _containers(student_keys), _containers(teacher_keys)
        for key in student_keys:
            parts, mapped = key.split("."), []
            for position, part in enumerate(parts):
                if part.isdigit():
                    n_s, n_t = student_sizes[tuple(parts[:position])], teacher_sizes.get(tuple(mapped), 0)
                    if n_t < n_s:
                        where = ".".join(mapped) or "the model"
                        raise ValueError(f"'{where}' has {n_t} layers in the teacher, fewer than the student's {n_s}")
                    part = str(int(uniform_indices(n_t, n_s)[int(part)]))
                mapped.append(part)
            mapping[key] = ".".join(mapped)
    for key, source in mapping.items():
        if source not in teacher_keys:
            raise ValueError(
                f"the teacher has no '{source}' for the student's '{key}' (a student deeper than the teacher, "
                "or another architecture: normalization, bias and residual options must match)"
            )
    return mapping


def is_head(key: str, head: str = "head") -> bool:
    """Whether state-dict ``key`` belongs to the classifier ``head`` module (its first name component)."""
    return key.split(".", 1)[0] == head


def select_weights(
    teacher: Mapping[str, torch.Tensor],
    student: Mapping[str, torch.Tensor],
    layers: str = "first-n",
    selector: ElementSelector | None = None,
    select_head: bool = False,
    head: str = "head",
) -> dict[str, torch.Tensor]:
    """Weight selection on state dicts: for every student key (except the ``head`` module's unless
    ``select_head``), the teacher tensor chosen by :func:`map_layers` cut to the student's shape by
    :func:`select_elements`, in the student's dtype. ``student`` only provides names, shapes and dtypes.

    Errors are ``ValueError`` naming the student key.
    """
    selector = selector or ElementSelector()
    keys = [key for key in student if select_head or not is_head(key, head)]
    mapping = map_layers(keys, teacher.keys(), layers)
    out: dict[str, torch.Tensor] = {}
    for key in keys:
        own = student[key]
        try:
            chosen = select_elements(teacher[mapping[key]], tuple(own.shape), selector)
        except ValueError as exc:
            raise ValueError(f"'{key}' {exc}") from None
        out[key] = chosen.to(dtype=own.dtype)
    return out


@torch.no_grad()
def weight_selection_(
    model: nn.Module,
    teacher: Mapping[str, torch.Tensor],
    layers: str = "first-n",
    elements: str = "uniform",
    consistent: bool = True,
    select_head: bool = False,
    generator: torch.Generator | None = None,
) -> list[str]:
    """Initialize ``model`` in place from the teacher's state dict ``teacher`` by weight selection
    (:func:`select_weights`); returns the keys it set. Tensors it does not set (the head by default)
    keep the values the model was built with, as the reference code's student keeps its own head.
    """
    own = model.state_dict()
    selector = ElementSelector(elements, consistent, generator)
    chosen = select_weights(teacher, own, layers, selector, select_head)
    for key, value in chosen.items():
        own[key].copy_(value.to(own[key].device))
    return list(chosen)
