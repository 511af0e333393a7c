"""Three-way check of the integer contract: fake-quantised PyTorch, torch integer mode, numpy reference."""

from dataclasses import asdict, dataclass

import numpy as np
import torch

from core import reference

from . import torch_int
from .lower import fake_quant_outputs
from .quantizers import quantize_input


@dataclass
class Agreement:
    """How the three implementations compare on a set of images (all counts should be 0)."""

    images: int
    reference_accuracy: float  # integer reference (numpy), the number that counts
    torch_accuracy: float  # fake-quantised PyTorch model
    logit_mismatches: int  # logits where fake-quantised PyTorch != integer reference
    torch_int_mismatches: int  # logits where torch integer mode != integer reference
    prediction_mismatches: int  # images whose predicted class differs between the three

    def to_dict(self):
        return asdict(self)

    @property
    def exact(self):
        return self.logit_mismatches == 0 and self.torch_int_mismatches == 0 and self.prediction_mismatches == 0


@torch.no_grad()
def compare(qnet, taps, network, x, y, *, batch=500):
    """Run ``x`` (floats in [0, 1]) through all three and count every difference."""
    fake, ref, tint = [], [], []
    for s in range(0, x.shape[0], batch):
        xb = x[s : s + batch]
        codes = quantize_input(xb, network.input_bits).numpy().astype(np.int64)
        fake.append(fake_quant_outputs(qnet, taps[-1:], xb)[0])
        ref.append(reference.run(network, codes)[-1])
        tint.append(torch_int.run(network, codes)[-1])
    fake, ref, tint = (np.concatenate(v) for v in (fake, ref, tint))
    y = np.asarray(y)
    p_fake, p_ref, p_tint = fake.argmax(1), ref.argmax(1), tint.argmax(1)
    return Agreement(
        images=int(x.shape[0]),
        reference_accuracy=float((p_ref == y).mean()),
        torch_accuracy=float((p_fake == y).mean()),
        logit_mismatches=int((fake != ref).sum()),
        torch_int_mismatches=int((tint != ref).sum()),
        prediction_mismatches=int(((p_fake != p_ref) | (p_tint != p_ref)).sum()),
    )
