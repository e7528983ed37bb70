"""A transcription of the reference SVFT layer (VijayLingam95/SVFT, svft/svft_layers.py: SVFTLayer and
LinearWithSVFT), the parity target of the tests: the reference itself is not installable (a script
repository that needs torch_sparse), so its construction and forward are rewritten here with torch's own
sparse COO tensors in place of torch_sparse.SparseTensor (both add repeated entries). Its construction draws
from torch's global generator in the reference's order (spdiags' throw-away randn for the band, rows then
columns for the random pattern, then the Kaiming draw of s)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn


class ReferenceSVFTLayer(nn.Module):
    def __init__(self, u, s, v, off_diag, pattern="banded", rank=None):  # noqa: ANN001 - transcription
        super().__init__()
        self.off_diag = off_diag
        rank = s.shape[0] if rank is None else min(s.shape[0], rank)
        self.n = rank
        s, u, v = s[:rank], u[:, :rank], v[:rank, :]
        self.u = nn.Parameter(u.clone().detach().contiguous(), requires_grad=False)
        s_pre = s.cpu().detach().clone().contiguous()
        self.s_pre_edge_index = torch.sparse.spdiags(s_pre, torch.LongTensor([0]), (self.n, self.n)).coalesce().indices()
        self.s_pre = nn.Parameter(s_pre, requires_grad=False)
        if pattern == "banded":
            diags = 2 * self.off_diag + 1
            offsets = torch.cat([torch.arange(0, self.off_diag + 1), torch.arange(-1, -self.off_diag - 1, -1)])
            self.s_edge_index = (
                torch.sparse.spdiags(torch.randn([diags, self.n]), offsets, (self.n, self.n)).coalesce().indices()
            )
            self.s = nn.Parameter(torch.zeros(self.s_edge_index.shape[1], dtype=s.dtype))
        elif pattern == "random":
            k = self.n * (2 * self.off_diag + 1) - self.off_diag * (self.off_diag + 1)
            rows = torch.randint(0, self.n, (k,))
            cols = torch.randint(0, self.n, (k,))
            self.s_edge_index = torch.stack([rows, cols])
            self.s = nn.Parameter(torch.zeros(k, dtype=s.dtype))
        elif pattern == "top_k":
            coeffs = u @ v.T if u.shape == v.shape else (u if u.shape[0] == u.shape[1] else v)
            k = self.n * (2 * self.off_diag + 1) - self.off_diag * (self.off_diag + 1)
            _, top = torch.topk(coeffs.contiguous().view(-1), k)
            self.s_edge_index = torch.stack([top // coeffs.size(1), top % coeffs.size(1)])
            self.s = nn.Parameter(torch.zeros(k, dtype=s.dtype))
        torch.nn.init.kaiming_normal_(self.s[None, :])
        self.gate = nn.Parameter(torch.tensor([0.0], dtype=s.dtype))
        self.v = nn.Parameter(v.clone().detach().contiguous(), requires_grad=False)

    def get_weights(self) -> torch.Tensor:
        n = self.n
        m = torch.sparse_coo_tensor(self.s_edge_index, self.s * F.sigmoid(self.gate), (n, n), check_invariants=True)
        s_pre = torch.sparse_coo_tensor(self.s_pre_edge_index, self.s_pre, (n, n), check_invariants=True)
        del_s = s_pre + m
        weight = torch.sparse.mm(del_s, self.v).T
        return weight @ self.u.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.get_weights()


class ReferenceLinearWithSVFT(nn.Module):
    def __init__(self, linear, off_diag, pattern="banded", rank=None):  # noqa: ANN001 - transcription
        super().__init__()
        self.bias = linear.bias
        svd = torch.linalg.svd(linear.weight, full_matrices=False)
        self.svft_layer = ReferenceSVFTLayer(svd[0], svd[1], svd[2], off_diag=off_diag, pattern=pattern, rank=rank)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.svft_layer(x)
        return out + self.bias if self.bias is not None else out

    def merge_and_unload(self) -> torch.Tensor:
        return self.svft_layer.get_weights().T.contiguous()


@pytest.fixture(scope="session")
def reference_svft() -> type:
    return ReferenceLinearWithSVFT
