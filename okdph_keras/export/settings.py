"""What an export is built with: variants, input size, normalisation and test-time style."""

import dataclasses

from okdph_keras.data.views import NORMALIZATION, STYLES
from okdph_keras.export.convert import VARIANTS
from okdph_keras.validation import fail


@dataclasses.dataclass(frozen=True)
class Settings:
    image_size: int
    channels: int
    num_classes: int
    mean: tuple
    std: tuple
    style: str | None


def check_variants(variants):
    """The known `variants` in `VARIANTS` order (one name or several)."""
    if isinstance(variants, str):
        variants = (variants,)
    variants = tuple(variants)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        fail(
            "variants", unknown or variants, f"one or more of the TFLite variants {list(VARIANTS)}"
        )
    return tuple(v for v in VARIANTS if v in variants)


def _parse_normalization(value, channels):
    """`(mean, std)` of a `NORMALIZATION` name or of `(mean, std)`, one value or one per channel."""
    named = NORMALIZATION.get(value) if isinstance(value, str) else value
    try:
        mean, std = (tuple(float(x) for x in part) for part in named)
    except (TypeError, ValueError):
        mean = std = ()
    if not mean or len(mean) != len(std) or len(mean) not in (1, channels) or min(std) <= 0:
        fail(
            "normalization",
            value,
            f"a name of {sorted(NORMALIZATION)} or (mean, std) with {channels} (or 1) means and "
            "as many positive standard deviations",
        )
    return mean, std


def resolve(origin, *, normalization, style, input_size):
    """The `Settings` of `origin`'s students: the caller's, else the run's, else the model's."""
    model = origin.students[0]
    shape = tuple(model.input_shape)
    if len(shape) != 4:
        raise ValueError(
            f"The student takes inputs of shape {shape}; expected images [B, H, W, C]."
        )
    _, height, width, channels = shape
    config = origin.config
    size = input_size or (config.image_size if config else None) or height
    if size is None:
        raise ValueError(
            "The student takes images of any size: pass input_size (the side S of its images)."
        )
    if (height is not None and height != size) or (width is not None and width != size):
        raise ValueError(
            f"The student takes {height}x{width} images but the input size is {size}x{size}: "
            "only square images of the student's size can be exported."
        )
    if normalization is None:
        if config is None:
            raise ValueError(
                "A .keras file does not record its normalisation: pass normalization= (a name "
                f"of {sorted(NORMALIZATION)} or (mean, std) per channel; CLI --normalization)."
            )
        normalization = config.normalization
    mean, std = _parse_normalization(normalization, channels)
    style = style or (config.style if config else None)
    if style is not None and style not in STYLES:
        fail("style", style, f"one of {STYLES} or None")
    return Settings(
        image_size=int(size),
        channels=int(channels),
        num_classes=int(model.output_shape[-1]),
        mean=mean,
        std=std,
        style=style,
    )
