"""OKDPH on ImageNet (TFDS `imagenet2012`, which needs a manual download).

    python -m recipes.imagenet --data_dir=~/tensorflow_datasets --model=resnet18
    python -m recipes.imagenet --smoke --data_dir=...

The reference publishes no ImageNet schedule; the defaults are the usual
ResNet one: 100 epochs, batch 256, SGD 0.1, lr x 0.1 at 30%/60%/90%, L2 1e-4.
"""

from recipes import common

if __name__ == "__main__":
    common.main(
        dataset="imagenet2012",
        views_kind="imagenet",
        model="resnet18",
        image_size=224,
        style="imagenet",
        normalization="imagenet",
        epochs=100,
        batch_size=256,
        weight_decay=1e-4,
        lr_decay_epochs=(0.3, 0.6, 0.9),
    )
