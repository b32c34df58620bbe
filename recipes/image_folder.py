"""OKDPH on any class-per-folder image tree: DATA_DIR/train/<class>/*.jpg and
DATA_DIR/test/<class>/... (or val/).

    python -m recipes.image_folder --data_dir=/data/flowers --model=resnet18
    python -m recipes.image_folder --data_dir=/tmp/cifar10-jpg --style=cifar \
        --image_size=32 --normalization=cifar10 --model=resnet32
"""

from recipes import common

if __name__ == "__main__":
    common.main(
        dataset="image_folder",
        views_kind=None,
        model="resnet18",
        image_size=224,
        style="imagenet",
        normalization="imagenet",
    )
