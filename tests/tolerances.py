"""Float tolerances for comparing two computations that should agree but need not be bit-identical.

Two separately built models, a different batch split, a different memory layout or a new torch release may pick
other kernels, which sum in another order. In float32 each such reordering changes a result by a few ulps
(eps = 1.2e-7) of the magnitudes being summed, and a deep network accumulates a few hundred of those. So the
tolerance scales with the size of the values compared and with any amplification applied afterwards (a
guidance scale s turns errors e_c, e_u of its two inputs into up to (|s| + |1 - s|) * e).

`torch.equal` stays where bit-identity is the contract: the same computation repeated in one process, tensors
saved and loaded back, pure indexing and concatenation.
"""

from __future__ import annotations

import torch

# About 100 float32 ulps: the drift a deep network's reordered reductions accumulate, with margin.
FP32_RELATIVE = 1e-5


def guidance_amplification(scale: float) -> float:
    """How much classifier-free guidance at `scale` can amplify an error in its two model outputs."""
    return abs(scale) + abs(1.0 - scale)


def assert_fp32_close(actual: torch.Tensor, expected: torch.Tensor, amplification: float = 1.0) -> None:
    """`actual` equals `expected` up to float32 reordering drift, relative to the largest value compared."""
    magnitude = max(float(expected.abs().max()), 1.0)
    atol = FP32_RELATIVE * magnitude * amplification
    torch.testing.assert_close(actual, expected, rtol=FP32_RELATIVE, atol=atol)
