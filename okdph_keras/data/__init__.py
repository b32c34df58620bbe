"""Data: sources (TFDS, image folders, arrays), views, multi-view pipelines.

Nothing here knows of models.
"""

from okdph_keras.data.pipeline import eval_dataset, multi_view_dataset
from okdph_keras.data.sources import (
    Source,
    from_arrays,
    limit_per_class,
    load_source,
    split_per_class,
)
from okdph_keras.data.views import (
    DEFAULT_VIEWS,
    NORMALIZATION,
    VIEW_NAMES,
    View,
    eval_transform,
    make_view,
)

__all__ = [
    "DEFAULT_VIEWS",
    "NORMALIZATION",
    "VIEW_NAMES",
    "Source",
    "View",
    "eval_dataset",
    "eval_transform",
    "from_arrays",
    "limit_per_class",
    "load_source",
    "make_view",
    "multi_view_dataset",
    "split_per_class",
]
