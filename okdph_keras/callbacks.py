"""Training-time callbacks for `OKDPH`."""

import keras

from okdph_keras.validation import check_choice, check_integer, check_number, fail

FUSION_UNITS = ("epoch", "batch")


@keras.saving.register_keras_serializable(package="okdph_keras")
class Fusion(keras.callbacks.Callback):
    """Pulls every student toward the HWM at a fixed interval.

    `theta_m <- gamma * theta_h + (1 - gamma) * theta_m` for every student and
    every float variable (BatchNorm statistics included), at the end of every
    `every` epochs or batches. The optimizer's state is untouched. Batches are
    counted by the optimizer's step counter, so the schedule survives a resume.

    Args:
        gamma: fusion ratio in [0, 1]; 1 replaces each student by the HWM.
        every: interval, an integer >= 1.
        unit: `"epoch"` or `"batch"`.

    Example:
        >>> model.fit(data, epochs=300, callbacks=[Fusion(gamma=0.5, every=1)])
    """

    def __init__(self, gamma=0.5, every=1, unit="epoch"):
        super().__init__()
        self.gamma = check_number("gamma", gamma, low=0, high=1)
        self.every = check_integer("every", every, low=1)
        self.unit = check_choice("unit", unit, FUSION_UNITS)
        self._batches_done = 0
        self._epoch_start = 0
        self._epoch = None  # the epoch in progress whose fusion is still due

    def set_model(self, model):
        if not callable(getattr(model, "fuse", None)):
            fail("model", model, "an OKDPH model (Fusion calls its fuse method)")
        super().set_model(model)

    def on_train_begin(self, logs=None):
        self._batches_done = int(self.model.optimizer.iterations.numpy())

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = self._batches_done
        self._epoch = epoch

    def on_test_begin(self, logs=None):
        # Inside fit(), validation starts once the epoch's training is done.
        self._end_training_epoch()

    def on_train_batch_end(self, batch, logs=None):
        if self.unit != "batch":
            return
        # `batch` is the index within the epoch of the last step run; with
        # steps_per_execution > 1 several steps end at once.
        done = self._epoch_start + batch + 1
        if done // self.every > self._batches_done // self.every:
            self.model.fuse(self.gamma)
        self._batches_done = done

    def on_epoch_end(self, epoch, logs=None):
        self._end_training_epoch()

    def _end_training_epoch(self):
        if self._epoch is None:
            return
        if self.unit == "epoch" and (self._epoch + 1) % self.every == 0:
            self.model.fuse(self.gamma)
        self._epoch = None

    def get_config(self):
        return {"gamma": self.gamma, "every": self.every, "unit": self.unit}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="okdph_keras")
class EpochCounter(keras.callbacks.Callback):
    """Sets `model.epoch` (the 0-based epoch in progress) at the start of every epoch.

    `OKDPH.fit` adds it for an objective whose losses ramp up over the epochs;
    a custom loop calls `on_epoch_begin` itself. With `initial_epoch` (a resumed
    run) the first value is the epoch resumed.

    Example:
        >>> model.fit(data, epochs=300, callbacks=[EpochCounter()])
    """

    def on_epoch_begin(self, epoch, logs=None):
        del logs
        self.model.epoch.assign(float(epoch))

    def get_config(self):
        return {}


class EvaluateEachEpoch(keras.callbacks.Callback):
    """Evaluates the model on a second dataset after every epoch and logs it.

    `fit()` validates on one dataset (`val_*`); this adds another, such as the
    test set while `fit()` validates on a held-out split. Its figures enter the
    epoch's logs as `<prefix><metric>`, so callbacks listed after it (checkpoints,
    TensorBoard) and the progress line see them. List it after `Fusion`, so that
    it measures the fused students.

    Args:
        data: a dataset `evaluate()` accepts.
        prefix: prepended to every metric name, e.g. `"test_"`.
        evaluate: `evaluate(model, data) -> {name: value}`; default
            `model.evaluate(data, return_dict=True)`. Pass
            `okdph_keras.loop.evaluate` where Keras cannot evaluate (multi-worker).

    Example:
        >>> model.fit(train, validation_data=validation, epochs=10,
        ...           callbacks=[Fusion(), EvaluateEachEpoch(test, "test_")])
    """

    def __init__(self, data, prefix="test_", evaluate=None):
        super().__init__()
        if not prefix or prefix == "val_":
            fail("prefix", prefix, "a non-empty prefix other than 'val_'")
        self.data = data
        self.prefix = prefix
        self.evaluate = evaluate or (
            lambda model, data: model.evaluate(data, verbose=0, return_dict=True)
        )

    def on_epoch_end(self, epoch, logs=None):
        results = self.evaluate(self.model, self.data)
        if logs is not None:
            logs.update({f"{self.prefix}{name}": value for name, value in results.items()})
