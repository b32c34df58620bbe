"""OKDPH on CIFAR100 (TFDS `cifar100`) with the reference recipe.

    python -m recipes.cifar100 --model=resnet32            # 300 epochs, the paper's table
    python -m recipes.cifar100 --smoke                     # seconds, on a tiny slice

Offline, point --data_dir at prepared TFDS data (see README).
"""

from recipes import common

if __name__ == "__main__":
    common.main(
        dataset="cifar100",
        views_kind="cifar100",
        model="resnet32",
        image_size=32,
        style="cifar",
        normalization="cifar100",
    )
