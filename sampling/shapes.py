"""Sample shapes: the (height, width) a pipeline draws at, for any aspect ratio its models can make.

A model is trained at one square `image_size` but samples any height and width that are multiples of its
downsampling factor. A shape for an aspect ratio keeps the model's pixel budget (height x width at most
image_size squared), so a wide panel costs what a square one does. With an upsampler, both sides scale by the
upsampler's factor (its image_size over the base's), so the base shape is chosen so the upsampled one is valid too.
A benchmark or a caller asks for a shape with `shape_for_aspect` or passes its own (height, width) to
`TextToImage.generate(..., shape=...)`, checked by `check_base_shape`.
"""

from __future__ import annotations

import math
from fractions import Fraction

from data_pipeline.errors import UserError
from finetune.model.options import architecture

from .loading import ModelPair, SamplingModel

Shape = tuple[int, int]  # (height, width) in pixels
MAX_ASPECT = 4.0  # wider or taller than 4:1 the models draw stretched blobs; refused rather than made


class ShapeError(UserError, ValueError):
    """A sample shape or aspect ratio the models cannot make."""


def downsampling_factor(sm: SamplingModel) -> int:
    return 2 ** (len(architecture(sm.options)["channel_mult"]) - 1)


def upsampling_ratio(models: ModelPair) -> Fraction:
    """Output size over base size: 1 without an upsampler."""
    if models.upsampler is None:
        return Fraction(1)
    return Fraction(models.upsampler.image_size, models.base.image_size)


def base_multiple(models: ModelPair) -> int:
    """The step base sides move in: a multiple of the base's factor whose upsampled size is one of the upsampler's."""
    step = downsampling_factor(models.base)
    if models.upsampler is None:
        return step
    ratio, up_step = upsampling_ratio(models), downsampling_factor(models.upsampler)
    multiple = step
    while (multiple * ratio).denominator != 1 or (multiple * ratio).numerator % up_step:
        multiple += step
        if multiple > models.base.image_size:
            raise ShapeError(
                f"no base size scales to the upsampler's multiples of {up_step} "
                f"(base {models.base.image_size} px, upsampler {models.upsampler.image_size} px)"
            )
    return multiple


def default_shape(models: ModelPair) -> Shape:
    return (models.base.image_size, models.base.image_size)


def output_shape(models: ModelPair, base_shape: Shape) -> Shape:
    ratio = upsampling_ratio(models)
    return (int(base_shape[0] * ratio), int(base_shape[1] * ratio))


def fit_shape(aspect: float, size: int, multiple: int) -> Shape:
    """The largest (height, width) of multiples of `multiple` within size x size pixels whose width / height is
    nearest `aspect` (within 5%, else the nearest of all)."""
    if not (math.isfinite(aspect) and 1 / MAX_ASPECT <= aspect <= MAX_ASPECT):
        raise ShapeError(f"aspect ratio {aspect:.3g} (width/height) is outside 1:{MAX_ASPECT:g} to {MAX_ASPECT:g}:1")
    budget = size * size
    candidates = []
    for height in range(multiple, budget // multiple + 1, multiple):
        width = max(multiple, round(height * aspect / multiple) * multiple)
        if height * width <= budget:
            error = abs(math.log(width / height / aspect))
            candidates.append((error, height * width, height, width))
    close = [c for c in candidates if c[0] <= math.log(1.05)]
    error, area, height, width = max(close, key=lambda c: (c[1], -c[0])) if close else min(candidates)
    return (height, width)


def shape_for_aspect(models: ModelPair, aspect: float) -> Shape:
    """The base-stage shape for a width / height ratio (the square image_size for 1)."""
    return fit_shape(aspect, models.base.image_size, base_multiple(models))


def check_base_shape(models: ModelPair, shape: Shape) -> Shape:
    """`shape` as ints, or ShapeError when the models cannot sample it."""
    height, width = (int(side) for side in shape)
    multiple, size = base_multiple(models), models.base.image_size
    if height < multiple or width < multiple or height % multiple or width % multiple:
        raise ShapeError(f"sample size {height}x{width}: height and width must be positive multiples of {multiple}")
    if height * width > size * size:
        raise ShapeError(
            f"sample size {height}x{width} is over the model's budget of {size}x{size} = {size * size} pixels"
        )
    if max(height, width) / min(height, width) > MAX_ASPECT:
        raise ShapeError(f"sample size {height}x{width} is more elongated than {MAX_ASPECT:g}:1")
    return (height, width)
