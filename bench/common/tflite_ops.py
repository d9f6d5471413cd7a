"""A TFLite-convertible torch module of a case: the same graph and weights, with every conv3d and
avgpool3d written as 2-D ops (TFLite has no depthwise/grouped 3-D convolution or 3-D pooling)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.common.cases import SEED, Case


def conv_as_2d(x: list[Tensor], p: dict[str, Tensor], a: dict[str, Any]) -> Tensor:
    """conv3d (no temporal stride) as conv2d: kt×1×1 over [B, C, T, H·W], else a sum over kt of 2-D convs."""
    (t0, t1), (h0, h1), (w0, w1) = a["pads"]
    v = F.pad(x[0], (w0, w1, h0, h1, t0, t1))
    weight, bias, groups = p["weight"], p.get("bias"), a["groups"]
    st, sh, sw = a["stride"]
    kt, kh, kw = weight.shape[2:]
    if st != 1:
        raise ValueError(f"temporal stride {st} has no 2-D form")
    b, c, t, h, w = v.shape
    if kt > 1 and kh == kw == 1 and sh == sw == 1:
        y = F.conv2d(v.reshape(b, c, t, h * w), weight.reshape(*weight.shape[:3], 1), bias, groups=groups)
        return y.reshape(b, y.shape[1], y.shape[2], h, w)
    out_t = t - kt + 1
    y = None
    for i in range(kt):
        frames = v[:, :, i:i + out_t].transpose(1, 2).reshape(b * out_t, c, h, w)
        yi = F.conv2d(frames, weight[:, :, i], bias if i == 0 else None, stride=(sh, sw), groups=groups)
        y = yi if y is None else y + yi
    return y.reshape(b, out_t, *y.shape[1:]).transpose(1, 2)


def avgpool_as_2d(x: list[Tensor], _p: dict[str, Tensor], a: dict[str, Any]) -> Tensor:
    """1×kh×kw average pool over real cells only, as avg_pool2d on [B·T, C, H, W]."""
    (t0, t1), (h0, h1), (w0, w1) = a["pads"]
    kt, kh, kw = a["kernel"]
    if kt != 1 or t0 or t1:
        raise ValueError("only 1×kh×kw pooling has a 2-D form")
    b, c, t, h, w = x[0].shape
    frames = x[0].transpose(1, 2).reshape(b * t, c, h, w)
    pad, kernel, stride = (w0, w1, h0, h1), (kh, kw), tuple(a["stride"][1:])
    total = F.avg_pool2d(F.pad(frames, pad), kernel, stride)
    count = F.avg_pool2d(F.pad(torch.ones_like(frames[:1, :1]), pad), kernel, stride)
    y = total / count
    return y.reshape(b, t, c, *y.shape[2:]).transpose(1, 2)


class Positional(nn.Module):
    """forward(image, *states) → (logits, *new_states) in the graph's state order, for export."""

    def __init__(self, module: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.module, self.names = module, names

    def forward(self, image: Tensor, *states: Tensor) -> tuple[Tensor, ...]:
        logits, new = self.module(image, dict(zip(self.names, states)))
        return (logits, *[new[n] for n in self.names])


def export_program(case: Case, out: Path, seed: int = SEED) -> dict[str, Any]:
    """torch.export the 2-D form of the case (`seed` weights) to a .pt2 file; checks it equals the reference."""
    from mvcompile.interface.compile import Model, export
    from mvcompile.lower.torch import to_torch

    from bench.common.cases import make_clip

    exported = export(Model(case.spec, variant=case.variant, mode=case.mode, frames=case.frames, seed=seed))
    reference = to_torch(exported.graph).eval()
    names = [s.name for s in exported.graph.states]
    wrapped = Positional(to_torch(exported.graph, {"conv": conv_as_2d, "avgpool": avgpool_as_2d}), names).eval()
    image = torch.from_numpy(make_clip(case)[:, :case.frames])
    states = reference.initial_states()
    args = (image, *[states[n] for n in names])
    with torch.no_grad():
        expected = reference(image, states)[0]
        diff = float((wrapped(*args)[0] - expected).abs().max())
        program = torch.export.export(wrapped, args)
    scale = max(1.0, float(expected.abs().max()))
    if not diff <= 1e-4 * scale:  # float32 rounding of a differently ordered sum, relative to the logits
        raise ValueError(f"{case.key}: the 2-D form differs from the reference by {diff} (logits up to {scale:.3g})")
    torch.export.save(program, out)
    return {"max_abs_diff_vs_reference": diff}
