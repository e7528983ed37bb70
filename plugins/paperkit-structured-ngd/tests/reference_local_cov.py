"""A hand transcription, for the parity tests, of the authors' optimizer: ``LocalOptimizer`` in
yorkerlin/StructuredNGD-DL ``optimizers/local_cov.py`` with ``ComputeCovA`` / ``ComputeCovG`` / ``_extract_patches``
from ``utils/kfac_utils.py`` (no license file in that repository; transcribed for testing, not shipped).

It keeps the reference's structure on purpose, independent of the plugin's: per-module dicts, a forward pre-hook
and a backward hook on the module (``register_full_backward_hook`` for torch's deprecated ``register_backward_hook``,
which gives the same output gradient for these layers), ``Tensor.unfold`` patches, the gradient overwritten in
``.grad``, both the ``faster`` and the standard branch, the hard-coded factor warm-up and weight-decay delay.
Departures: no ``ipdb``/prints, identity built on the factor's device (the reference hard-codes ``device='cuda'``),
and ``acc_stats`` set here from the step count (``main.py`` sets it to True on the same steps).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _patches(x: torch.Tensor, kernel_size, stride, padding, groups) -> torch.Tensor:  # noqa: ANN001
    """kfac_utils._extract_patches: (B, oh, ow, in_c/groups*kh*kw), averaged over the groups."""
    if padding[0] + padding[1] > 0:
        x = F.pad(x, (padding[1], padding[1], padding[0], padding[0])).data
    x = x.unfold(2, kernel_size[0], stride[0])
    x = x.unfold(3, kernel_size[1], stride[1])
    x = x.transpose_(1, 2).transpose_(2, 3).contiguous()
    x = x.reshape(x.size(0), x.size(1), x.size(2), groups, -1, x.size(4), x.size(5))
    return torch.mean(x, 3).view(x.size(0), x.size(1), x.size(2), -1)


def cov_a(a: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """kfac_utils.ComputeCovA."""
    if isinstance(layer, nn.Conv2d):
        batch_size = a.size(0)
        a = _patches(a, layer.kernel_size, layer.stride, layer.padding, layer.groups)
        spatial_size = a.size(1) * a.size(2)
        a = a.view(-1, a.size(-1))
        if layer.bias is not None:
            a = torch.cat([a, a.new_ones(list(a.shape[:-1]) + [1])], dim=-1)
        a = a / spatial_size
        return a.t() @ (a / batch_size)
    b = a.reshape(-1, a.size(-1))
    batch_size = a.size(0)
    if layer.bias is not None:
        b = torch.cat([b, b.new_ones(list(b.shape[:-1]) + [1])], dim=-1)
    return b.t() @ (b / batch_size)


def cov_g(g: torch.Tensor, layer: nn.Module, batch_averaged: bool) -> torch.Tensor:
    """kfac_utils.ComputeCovG."""
    if isinstance(layer, nn.Conv2d):
        spatial_size = g.size(2) * g.size(3)
        batch_size = g.shape[0]
        g = g.transpose(1, 2).transpose(2, 3).contiguous()
        g = g.view(-1, g.size(-1))
        if batch_averaged:
            g = g * batch_size
        g = g * spatial_size
        return g.t() @ (g / g.size(0))
    batch_size = g.size(0)
    if batch_averaged:
        return g.t() @ (g * batch_size)
    return g.t() @ (g / batch_size)


class LocalOptimizer(torch.optim.Optimizer):
    def __init__(self, model: nn.Module, lr: float = 0.001, momentum: float = 0.9, damping: float = 0.001,
                 beta2: float = 0.5, weight_decay: float = 1e-2, TCov: int = 10, TInv: int = 10, faster: bool = True,
                 lr_cov: float = 1e-2, batch_averaged: bool = True) -> None:
        super().__init__(model.parameters(), dict(lr=lr, momentum=momentum, weight_decay=weight_decay))
        assert not faster or TCov == TInv
        self.damping, self.faster, self.batch_averaged = damping, bool(faster), batch_averaged
        self.modules_ = [m for m in model.modules() if m.__class__.__name__ in {"Linear", "Conv2d"}]
        for m in self.modules_:
            m.register_forward_pre_hook(self._save_input)
            m.register_full_backward_hook(self._save_grad_output)
        self.steps, self.beta2, self.lr_cov, self.TCov, self.TInv = 0, beta2, lr_cov, TCov, TInv
        self.aa, self.gg, self.A, self.B, self.m_A, self.m_B = {}, {}, {}, {}, {}, {}
        self.acc_stats = False

    def _save_input(self, module, input):  # noqa: ANN001, A002
        if torch.is_grad_enabled() and self.steps % self.TCov == 0:
            aa = cov_a(input[0].data, module)
            if self.steps == 0:
                self.A[module] = torch.diag(aa.new(aa.size(0)).fill_(1))
                self.m_A[module] = torch.zeros_like(self.A[module])
            self.aa[module] = aa

    def _save_grad_output(self, module, grad_input, grad_output):  # noqa: ANN001
        if self.acc_stats and self.steps % self.TCov == 0:
            gg = cov_g(grad_output[0].data, module, self.batch_averaged)
            if self.steps == 0:
                self.B[module] = torch.diag(gg.new(gg.size(0)).fill_(1))
                self.m_B[module] = torch.zeros_like(self.B[module])
            self.gg[module] = gg

    def _update_local(self, m: nn.Module) -> None:
        damping = self.damping
        d, p = self.gg[m].size(0), self.aa[m].size(0)
        A, B = self.A[m], self.B[m]
        eye_p, eye_d = torch.eye(p, dtype=A.dtype), torch.eye(d, dtype=B.dtype)
        if self.faster:
            tr_B_tB, tr_A_tA = torch.sum(B ** 2), torch.sum(A ** 2)
            t1, t2 = self.aa[m] @ A, self.gg[m] @ B
            tr_v_a, tr_v_b = torch.sum(A * t1), torch.sum(B * t2)
            ng_a = (A.t() @ ((damping * tr_B_tB / d) * A + (tr_v_b / d) * t1) - eye_p) / 2.0
            ng_b = (B.t() @ ((damping * tr_A_tA / p) * B + (tr_v_a / p) * t2) - eye_d) / 2.0
        else:
            v_a = A.t() @ self.aa[m] @ A
            v_b = B.t() @ self.gg[m] @ B
            A_tA, B_tB = A.t() @ A, B.t() @ B
            ng_a = ((damping * torch.trace(B_tB) / d) * A_tA + (torch.trace(v_b) / d) * v_a - eye_p) / 2.0
            ng_b = ((damping * torch.trace(A_tA) / p) * B_tB + (torch.trace(v_a) / p) * v_b - eye_d) / 2.0
        if self.steps <= 100:
            lr1 = 2e-4
        elif self.steps < 500:
            lr1 = 2e-3
        else:
            lr1 = self.lr_cov
        self.m_A[m].mul_(self.beta2).add_((ng_a + ng_a.t()) / 2.0)
        self.A[m].add_((self.A[m] @ self.m_A[m]), alpha=-lr1)
        self.m_B[m].mul_(self.beta2).add_((ng_b + ng_b.t()) / 2.0)
        self.B[m].add_((self.B[m] @ self.m_B[m]), alpha=-lr1)
        if self.faster:
            self.aa[m] = self.A[m] @ (self.A[m].t())
            self.gg[m] = self.B[m] @ (self.B[m].t())

    @staticmethod
    def _matrix_grad(m: nn.Module) -> torch.Tensor:
        if isinstance(m, nn.Conv2d):
            g = m.weight.grad.data.view(m.weight.grad.data.size(0), -1)
        else:
            g = m.weight.grad.data
        if m.bias is not None:
            g = torch.cat([g, m.bias.grad.data.view(-1, 1)], 1)
        return g

    def _update_natural_grad(self, m: nn.Module, g: torch.Tensor) -> None:
        if self.faster:
            v = self.gg[m] @ g @ self.aa[m]
        else:
            v1 = (g @ self.A[m]) @ self.A[m].t()
            v = self.B[m] @ (self.B[m].t() @ v1)
        if m.bias is not None:
            m.weight.grad.data.copy_(v[:, :-1].view(m.weight.grad.data.size()))
            m.bias.grad.data.copy_(v[:, -1:].view(m.bias.grad.data.size()))
        else:
            m.weight.grad.data.copy_(v.view(m.weight.grad.data.size()))

    def _step(self) -> None:
        for group in self.param_groups:
            weight_decay, momentum = group["weight_decay"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad.data
                if weight_decay != 0 and self.steps >= 20 * self.TCov:
                    d_p.add_(p.data, alpha=weight_decay)
                if momentum != 0:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        buf = state["momentum_buffer"] = torch.zeros_like(p.data)
                    else:
                        buf = state["momentum_buffer"]
                    buf.mul_(momentum).add_(d_p)
                    d_p = buf
                p.data.add_(d_p, alpha=-group["lr"])

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201
        for m in self.modules_:
            if self.steps % self.TInv == 0:
                self._update_local(m)
            self._update_natural_grad(m, self._matrix_grad(m))
        self._step()
        self.steps += 1
