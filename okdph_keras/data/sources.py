"""Where images come from: TFDS datasets, class-per-folder image trees, in-memory arrays.

Every loader returns a `Source` whose `dataset` yields unbatched
`(image uint8 [H, W, C], label int64 scalar)` in a deterministic order; file-backed
sources decode lazily, when the dataset is iterated. The loaders live in
`tfds_source` (TFDS, with its offline checks), `image_folder` (class-per-folder
trees) and `source` (the `Source` type, `from_arrays`); subsets in `subsets`.
"""

from okdph_keras.data.image_folder import load_image_folder
from okdph_keras.data.source import Source, from_arrays, parts_of
from okdph_keras.data.subsets import limit_per_class, split_per_class
from okdph_keras.data.tfds_source import load_tfds
from okdph_keras.validation import check_choice

__all__ = [
    "Source",
    "from_arrays",
    "limit_per_class",
    "load_source",
    "parts_of",
    "split_per_class",
]


def load_source(dataset, split, data_dir=None, download=True):
    """Loads one split of a TFDS image-classification dataset or of an image folder.

    Args:
        dataset: a TFDS name ("cifar10", "cifar100", "imagenet2012", or any TFDS
            dataset with an "image" and a ClassLabel "label" feature), or
            "image_folder" for a class-per-folder tree under `data_dir`.
        split: "train" or "test". TFDS: "test" reads the "test" split, or
            "validation" when there is none (imagenet2012). Image folder:
            `data_dir/test/`, else `val/`, else `validation/`.
        data_dir: TFDS data directory (None: TFDS's default, ~/tensorflow_datasets),
            or the image folder's root.
        download: TFDS only: download and prepare the dataset when it is absent.

    Returns:
        A `Source`. Its dataset reads TFDS files in a fixed order; `multi_view_dataset`
        shuffles a TFDS split's files per epoch (see `tfds_source.TfdsRecords.shuffled`).

    Raises:
        ValueError: unknown dataset or split, not an image-classification dataset,
            bad image folder.
        FileNotFoundError: data absent and not downloadable (download=False, or a
            manual download such as imagenet2012), missing image folder.
        ConnectionError: data absent and no download host reachable.

    Example:
        >>> train = load_source("cifar10", "train", data_dir="/data/tfds")
        >>> val = load_source("image_folder", "test", data_dir="/data/imagenet")
    """
    check_choice("split", split, ("train", "test"))
    if dataset == "image_folder":
        return load_image_folder(data_dir, split)
    return load_tfds(dataset, split, data_dir=data_dir, download=download)
