"""Integer-mode forward in PyTorch (int64 tensors only): an independent second implementation
of the integer network, checked against the numpy reference and the fake-quantised model."""

import numpy as np
import torch


def _round_shift(acc, shift):
    right = shift.clamp(min=0)
    half = torch.where(right > 0, torch.ones_like(right) << (right - 1).clamp(min=0), torch.zeros_like(right))
    return torch.where(shift >= 0, (acc + half) >> right, acc << (-shift).clamp(min=0))


def run_layer(layer, x, skip=None):
    """One integer layer on an int64 tensor ``(N, *in_shape)`` (``skip``: the tensor a
    layer with a skip adds, the output of layer ``layer.skip``)."""
    if layer.kind == "flatten":
        return x.flatten(1)
    if layer.kind in ("maxpool2d", "avgpool2d"):
        (kh, kw), (sh, sw) = layer.kernel, layer.stride
        win = x.unfold(2, kh, sh).unfold(3, kw, sw)
        return win.amax(dim=(4, 5)) if layer.kind == "maxpool2d" else win.sum(dim=(4, 5))
    a = {k: torch.from_numpy(np.asarray(v, dtype=np.int64)) for k, v in layer.arrays.items()}
    # weight from the codes, as the hardware reads them: sum over terms of +-(1 << shift)
    terms = torch.where(a["weight_zero"] != 0, 0, (1 - 2 * a["weight_sign"]) * (torch.ones_like(a["weight_shift"]) << a["weight_shift"]))
    w = terms.sum(dim=0)
    if layer.kind == "linear":
        acc = x @ w.T + a["bias"]
        shift = a["requant"]
    else:
        (kh, kw), (sh, sw), (ph, pw) = layer.kernel, layer.stride, layer.padding
        xp = torch.nn.functional.pad(x, (pw, pw, ph, ph))
        cols = xp.unfold(2, kh, sh).unfold(3, kw, sw)  # (N, C, Ho, Wo, kh, kw)
        acc = torch.einsum("nchwij,ocij->nohw", cols, w) + a["bias"][:, None, None]
        shift = a["requant"][:, None, None]
    if layer.has_skip:
        # codes into accumulator units: left shifts, or round-half-up right shifts
        acc = acc + _round_shift(skip, -a["skip_shift"].view((-1,) + (1,) * (acc.dim() - 2)))
    out = _round_shift(acc, shift)
    if layer.relu:
        out = out.clamp(0, 2**layer.out_bits - 1)
    return out


@torch.no_grad()
def run(network, inputs):
    """Every layer's output (numpy int64) for integer ``inputs``."""
    h = x = torch.as_tensor(np.asarray(inputs, dtype=np.int64))
    outs, kept = [], []
    for layer in network.layers:
        skip = None
        if layer.has_skip:
            skip = x if layer.skip < 0 else kept[layer.skip]
        h = run_layer(layer, h, skip)
        kept.append(h)
        outs.append(h.numpy())
    return outs
