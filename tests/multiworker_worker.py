"""One worker of a MultiWorkerMirroredStrategy run, for tests/test_multiworker.py.

    TF_CONFIG=... python tests/multiworker_worker.py CONFIG_JSON OUTPUT_NPZ

Trains the run that CONFIG_JSON (a `Config` as JSON) describes with
`okdph_keras.train.run` under MultiWorkerMirroredStrategy, as a recipe with
`--strategy=multiworker` does, then saves this worker's final student weights
to OUTPUT_NPZ.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from okdph_keras import distribute, train  # noqa: E402

train.enable_determinism()  # before any op, as a recipe's --deterministic
strategy = distribute.make_strategy("multiworker")  # before any op

import keras  # noqa: E402
import numpy as np  # noqa: E402

from okdph_keras.config import Config  # noqa: E402


class SaveWeights(keras.callbacks.Callback):
    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_train_end(self, logs=None):
        weights = [v.numpy() for s in self.model.students for v in s.variables]
        np.savez(self.path, *weights)


def main(config_path, output):
    with open(config_path) as file:
        config = Config.from_json_dict(json.load(file))
    train.run(config, strategy, callbacks=[SaveWeights(output)])


if __name__ == "__main__":
    main(*sys.argv[1:])
