"""Exponential moving average (EMA) of the weights, on top of Keras' optimizer EMA.

Keras optimizers keep the EMA themselves (`use_ema=True`): after each update
(`iterations` counting updates done before it, from 0),
`avg <- m * avg + (1 - m) * w` with `m = 0` at `iterations == 0`, so the first
update initialises the average to the updated weights. `fit()` writes the
average into the model's trainable variables (`finalize_variable_values`)
before the `on_train_end` callbacks; BatchNorm statistics are not averaged, so
`EMABatchNorm` recomputes them there. The average is optimizer state: it is
saved with the optimizer and survives a resume. Each `fit()` ends on the
average, so a later `fit()` trains on from the average, not from the raw
weights.
"""

import keras

from okdph_keras.baselines.batchnorm import check_steps, recompute_statistics
from okdph_keras.validation import check_number, fail


def ema_optimizer(optimizer, momentum=0.999, overwrite_frequency=None):
    """A fresh copy of `optimizer` with Keras' weight EMA switched on.

    Args:
        optimizer: a `keras.optimizers.Optimizer`, its name or its config;
            only its configuration is copied, not its state.
        momentum: the EMA momentum m, in [0, 1).
        overwrite_frequency: None (the average is written into the model once,
            at the end of `fit`) or an integer n >= 1 (also every n steps,
            which then trains on from the average).

    Returns:
        A new, unbuilt optimizer with `use_ema=True`.

    Example:
        >>> model.compile(ema_optimizer(keras.optimizers.SGD(0.1), 0.999), loss=...)
        >>> model.fit(data, epochs=200, callbacks=[EMABatchNorm(train_images.batch(256))])
    """
    momentum = check_number("momentum", momentum, low=0, high=1, high_open=True)
    optimizer = keras.optimizers.get(optimizer)
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        raise ValueError(
            "ema_optimizer takes the inner optimizer, not a LossScaleOptimizer; under "
            "mixed precision compile() wraps the returned optimizer itself."
        )
    config = keras.optimizers.serialize(optimizer)
    config["config"].update(
        use_ema=True, ema_momentum=momentum, ema_overwrite_frequency=overwrite_frequency
    )
    return keras.optimizers.deserialize(config)


class EMABatchNorm(keras.callbacks.Callback):
    """Recomputes BatchNorm statistics for the EMA weights at the end of `fit`.

    Needs a compiled optimizer with `use_ema=True` (see `ema_optimizer`).
    Not serializable: it holds data.

    Args:
        bn_data: batches of model inputs for `recompute_batchnorm`.
        steps: number of `bn_data` batches to use; all when None.

    Example:
        >>> model.fit(data, epochs=200, callbacks=[EMABatchNorm(train_images.batch(256))])
    """

    def __init__(self, bn_data, steps=None):
        super().__init__()
        if bn_data is None:
            fail("bn_data", bn_data, "batches of training inputs")
        check_steps("steps", steps)
        self.bn_data = bn_data
        self.steps = steps

    def set_model(self, model):
        if not isinstance(model, keras.Model):
            fail("model", model, "a keras.Model")
        super().set_model(model)

    def on_train_begin(self, logs=None):
        optimizer = self.model.optimizer
        # Under mixed precision the EMA lives in the LossScaleOptimizer's inner one.
        if not getattr(getattr(optimizer, "inner_optimizer", optimizer), "use_ema", False):
            raise ValueError(
                "EMABatchNorm needs an optimizer with use_ema=True; compile with "
                "okdph_keras.baselines.ema_optimizer(optimizer, momentum)."
            )

    def on_train_end(self, logs=None):
        # fit() has already written the average into the model.
        recompute_statistics(self.model, self.bn_data, self.steps)
