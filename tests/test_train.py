"""okdph_keras.train: the validation split, how the exported student is chosen and
never overwritten, and SWA's average surviving a kill before it is checkpointed."""

import dataclasses
import json
import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from okdph_keras import checkpointing, run_data, run_results, train
from okdph_keras.config import Config, validate
from okdph_keras.data import from_arrays


def config_for(tmp_path, **overrides):
    values = dict(
        dataset="cifar10",
        model="small_cnn",
        views=("hflip", "hflip", "none"),
        style="cifar",
        image_size=8,
        normalization=((0.5,), (0.5,)),
        run_name="unit",
        output_dir=str(tmp_path),
        saved_models_dir=str(tmp_path / "saved"),
    )
    return Config(**{**values, **overrides}).resolved()


def examples(source):
    pairs = [
        (int(image[0, 0, 0]) + 256 * int(image[0, 1, 0]), int(label))
        for image, label in source.dataset
    ]
    return pairs


@pytest.fixture
def labelled_arrays(monkeypatch):
    """cifar10 replaced by 230 tagged 8x8 images (their index is in two pixels): class c has 10 + 20c."""
    counts = [10, 30, 50, 70, 70]
    labels = np.repeat(np.arange(5), counts)
    np.random.default_rng(0).shuffle(labels)
    index = np.arange(len(labels))
    images = np.zeros((len(labels), 8, 8, 1), np.uint8)
    images[:, 0, 0, 0], images[:, 0, 1, 0] = index % 256, index // 256
    splits = {"train": from_arrays(images, labels), "test": from_arrays(images[:20], labels[:20])}
    monkeypatch.setattr(
        run_data.sources, "load_source", lambda dataset, split, data_dir=None: splits[split]
    )
    return labels, counts


def test_validation_split_is_held_out_per_class_and_seeded(tmp_path, labelled_arrays):
    labels, counts = labelled_arrays
    data = run_data.load_sources(config_for(tmp_path, validation_fraction=0.1, seed=3))
    held, kept = examples(data.validation), examples(data.train)
    held_indices, kept_indices = {i for i, _ in held}, {i for i, _ in kept}
    assert not held_indices & kept_indices
    assert held_indices | kept_indices == set(range(len(labels)))
    assert np.bincount([label for _, label in held], minlength=5).tolist() == [1, 3, 5, 7, 7]
    assert all(labels[i] == label for i, label in held + kept)
    assert [i for i, _ in kept] == sorted(kept_indices)  # the source's order is kept

    again = run_data.load_sources(config_for(tmp_path, validation_fraction=0.1, seed=3))
    assert examples(again.validation) == held
    other = run_data.load_sources(config_for(tmp_path, validation_fraction=0.1, seed=4))
    assert {i for i, _ in examples(other.validation)} != held_indices


def test_limited_data_comes_from_what_validation_leaves(tmp_path, labelled_arrays):
    data = run_data.load_sources(
        config_for(tmp_path, validation_fraction=0.1, data_fraction=0.5, seed=0)
    )
    held = {i for i, _ in examples(data.validation)}
    kept = examples(data.train)
    assert not held & {i for i, _ in kept}
    # ceil(0.5 * (n_c - ceil(0.1 n_c))) for n_c = 10, 30, 50, 70, 70
    assert np.bincount([label for _, label in kept], minlength=5).tolist() == [5, 14, 23, 32, 32]


def test_no_validation_split_when_the_fraction_is_zero(tmp_path, labelled_arrays):
    data = run_data.load_sources(config_for(tmp_path, validation_fraction=0.0))
    assert data.validation is None and data.train.num_examples == 230


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_validation_fraction_out_of_range_is_refused(tmp_path, fraction):
    with pytest.raises(ValueError, match=r"validation_fraction=.* it must be a number in \[0, 1\)"):
        validate(config_for(tmp_path, validation_fraction=fraction))


def history(validation, test):
    """Two epochs of history for 2 students: the final figures are the arguments."""
    values = {"loss": [1.0, 0.5]}
    for split, accuracies in (("val", validation), ("test", test)):
        if accuracies is None:
            continue
        values[f"{split}_loss"] = [1.0, 0.5]
        for name, accuracy in zip(("student_0", "student_1", "hwm", "ensemble"), accuracies):
            values[f"{split}_{name}_accuracy"] = [0.1, accuracy]
            values[f"{split}_{name}_ce"] = [2.0, 1.0 - accuracy]
    return values


def test_best_student_is_chosen_on_validation_never_on_test(tmp_path):
    config = config_for(tmp_path)
    results = run_results.summarize(
        config, history(validation=(0.6, 0.5, 0.6, 0.6), test=(0.7, 0.9, 0.8, 0.8)), 1.0
    )
    assert results["best_student"] == 0
    assert results["final_test_accuracy"]["student_1"] == 0.9
    assert results["final_validation_accuracy"]["student_0"] == 0.6
    assert results["students_mean_final_test_accuracy"] == pytest.approx(0.8)
    assert "validation split" in results["best_student_selected_by"]

    flipped = run_results.summarize(
        config, history(validation=(0.5, 0.6, 0.6, 0.6), test=(0.9, 0.7, 0.8, 0.8)), 1.0
    )
    assert flipped["best_student"] == 1


def test_without_validation_student_zero_is_exported(tmp_path):
    config = dataclasses.replace(config_for(tmp_path), validation_fraction=0.0)
    results = run_results.summarize(
        config, history(validation=None, test=(0.7, 0.9, 0.8, 0.8)), 1.0
    )
    assert results["best_student"] == 0 and "final_validation_accuracy" not in results
    assert "no validation split" in results["best_student_selected_by"]


def test_a_non_finite_loss_stops_training_and_keeps_the_last_checkpoint(tmp_path, labelled_arrays):
    class PoisonAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                kernel = self.model.students[1].trainable_variables[0]
                kernel.assign(np.full(kernel.shape, np.nan, np.float32))

    config = config_for(
        tmp_path,
        epochs=3,
        batch_size=64,
        validation_fraction=0.1,
        image_size=8,
        views=("none", "none", "none"),
    )
    with pytest.raises(FloatingPointError) as error:
        train.run(config, callbacks=[PoisonAfterFirstEpoch()])
    run_dir = tmp_path / "unit"
    state = checkpointing.load_state(run_dir)
    assert state["epochs_done"] == 1 and state["checkpoint"] == "checkpoints/epoch_0001.keras"
    message = str(error.value)
    assert "nan" in message and "step 5 " in message  # 4 steps of 64 in epoch 1 (207 images)
    assert str(run_dir / state["checkpoint"]) in message
    model = keras.saving.load_model(run_dir / state["checkpoint"])
    assert all(np.isfinite(v.numpy()).all() for v in model.variables if v.dtype.startswith("float"))
    assert not (run_dir / "results.json").exists()


@pytest.mark.parametrize(
    "method, objective, sam_rho",
    [
        ("okdph", "okdph", 0.0),
        ("independent", "independent", 0.0),
        ("dml", "dml", 0.0),
        ("kdcl", "kdcl", 0.0),
        ("sam", "sam", 0.05),
        ("swa", "independent", 0.0),
        ("ema", "independent", 0.0),
    ],
)
def test_each_method_builds_its_model_optimizer_and_callbacks(tmp_path, method, objective, sam_rho):
    config = config_for(tmp_path, method=method, epochs=8, swa_start=0.75)
    model = train.build_model(config, from_arrays(np.zeros((2, 8, 8, 1), np.uint8), [0, 1]))
    assert model.objective == objective and model.sam_rho == sam_rho
    optimizer = train.make_optimizer(config, 10)
    assert optimizer.use_ema == (method == "ema")
    schedule = optimizer.get_config()["learning_rate"]["class_name"]
    assert schedule == ("SWALearningRate" if method == "swa" else "PiecewiseConstantDecay")
    callbacks = train.method_callbacks(config, str(tmp_path), bn_data=tf.data.Dataset.range(1))
    names = [type(c).__name__ for c in callbacks]
    assert names == {"okdph": ["Fusion"], "swa": ["SWA"], "ema": ["EMABatchNorm"]}.get(method, [])
    if method == "swa":
        assert callbacks[0].start_epoch == 6


class RecordStudents(keras.callbacks.Callback):
    """Every student's trainable weights at each epoch end (kernels, biases, BatchNorm scales)."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(
            [[v.numpy() for v in s.trainable_variables] for s in self.model.students]
        )


def numpy_average(record, start_epoch):
    """Per student, the equal-weight mean of the recorded epochs from `start_epoch` on."""
    epochs = record.epochs[start_epoch:]
    return [
        [np.mean(arrays, axis=0) for arrays in zip(*(e[m] for e in epochs))]
        for m in range(len(epochs[0]))
    ]


def assert_weights(model, expected):
    found = [v.numpy() for v in model.trainable_variables]
    assert len(found) == len(expected) > 0
    for a, b in zip(found, expected):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def swa_config(tmp_path):
    # swa_start 0.3 of 3 epochs: epochs 1 and 2 (0-based) are averaged.
    return config_for(
        tmp_path,
        method="swa",
        epochs=3,
        batch_size=64,
        swa_start=0.3,
        views=("none", "none", "none"),
    )


def test_averaging_methods_leave_checkpoint_and_results_on_the_averaged_weights(
    tmp_path, labelled_arrays
):
    config = swa_config(tmp_path)
    record = RecordStudents()
    results = train.run(config, callbacks=[record])
    state = checkpointing.load_state(tmp_path / "unit")
    assert state["averaged"] is True
    model = keras.saving.load_model(tmp_path / "unit" / state["checkpoint"])
    average = numpy_average(record, start_epoch=1)
    for student, expected in zip(model.students, average):
        assert_weights(student, expected)
    assert_weights(
        keras.saving.load_model(results["exported_student"]), average[results["best_student"]]
    )
    data = run_data.load_sources(config)
    _, _, test = run_data.make_datasets(config, data)
    figures = model.evaluate(test, verbose=0, return_dict=True)
    assert results["final_test_accuracy"]["student_0"] == pytest.approx(
        figures["student_0_accuracy"]
    )
    assert state["history"]["test_student_0_ce"][-1] == pytest.approx(
        figures["student_0_ce"], rel=1e-5
    )


def test_a_kill_before_the_averaged_checkpoint_is_written_reruns_into_the_average(
    tmp_path, labelled_arrays, monkeypatch
):
    config = swa_config(tmp_path)
    record = RecordStudents()

    def killed(self, logs, averaged=False):
        raise SystemExit("killed after SWA's on_train_end, before the averaged checkpoint")

    with monkeypatch.context() as patch:
        patch.setattr(checkpointing.RunCheckpoint, "replace_last_epoch", killed)
        with pytest.raises(SystemExit):
            train.run(config, callbacks=[record])
    run_dir = tmp_path / "unit"
    state = checkpointing.load_state(run_dir)
    assert state["epochs_done"] == 3 and state["averaged"] is False
    assert not (run_dir / "results.json").exists() and not (tmp_path / "saved" / "unit").exists()

    results = train.run(config)
    assert results["epochs"] == 3
    average = numpy_average(record, start_epoch=1)
    last = record.epochs[-1][results["best_student"]]
    assert not np.allclose(
        last[0], average[results["best_student"]][0]
    )  # the average is not the last epoch
    assert_weights(
        keras.saving.load_model(results["exported_student"]), average[results["best_student"]]
    )
    state = checkpointing.load_state(run_dir)
    assert state["averaged"] is True
    model = keras.saving.load_model(run_dir / state["checkpoint"])
    for student, expected in zip(model.students, average):
        assert_weights(student, expected)

    # Everything, BatchNorm statistics recomputed for the average included, is what an
    # uninterrupted run ends with.
    straight = train.run(swa_config(tmp_path / "straight"))
    assert straight["final_test_accuracy"] == results["final_test_accuracy"]
    straight_state = checkpointing.load_state(tmp_path / "straight" / "unit")
    uninterrupted = keras.saving.load_model(
        tmp_path / "straight" / "unit" / straight_state["checkpoint"]
    )
    assert len(model.variables) == len(uninterrupted.variables)
    for a, b in zip(model.variables, uninterrupted.variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=a.path)


def test_an_export_of_another_run_directory_is_refused_before_training(tmp_path, labelled_arrays):
    first = config_for(
        tmp_path / "a",
        epochs=1,
        batch_size=64,
        saved_models_dir=str(tmp_path / "saved"),
        views=("none", "none", "none"),
    )
    train.run(first)
    exported = tmp_path / "saved" / "unit"
    first_dir = os.path.realpath(tmp_path / "a" / "unit")
    assert json.loads((exported / "origin.json").read_text()) == {"run_dir": first_dir}
    student = (exported / "student.keras").read_bytes()

    # The default run name under another output_dir: refused, naming both run directories.
    second = dataclasses.replace(first, output_dir=str(tmp_path / "b"))
    pattern = (
        f"{re.escape(str(exported))} holds the student exported by {re.escape(first_dir)}; this run "
        rf"\({re.escape(os.path.realpath(tmp_path / 'b' / 'unit'))}\) would overwrite it\. "
        "Pass another --run_name or --saved_models_dir"
    )
    with pytest.raises(ValueError, match=pattern):
        train.run(second)
    assert not (tmp_path / "b").exists()
    assert (exported / "student.keras").read_bytes() == student

    # The same run finishing again (killed after its export) exports again.
    (tmp_path / "a" / "unit" / "results.json").unlink()
    before = (exported / "student.keras").stat().st_mtime_ns
    train.run(first)
    assert (exported / "student.keras").stat().st_mtime_ns != before

    # A student without origin.json is someone else's too.
    (exported / "origin.json").unlink()
    (tmp_path / "a" / "unit" / "results.json").unlink()
    with pytest.raises(
        ValueError,
        match=r"holds the student exported by an unknown run \(there is no origin\.json\)",
    ):
        train.run(first)


def test_a_run_directory_of_another_config_is_refused_before_anything_runs(tmp_path):
    config = config_for(tmp_path)
    (tmp_path / "unit").mkdir()
    (tmp_path / "unit" / "config.json").write_text(json.dumps(config.to_json_dict()))
    changed = dataclasses.replace(config, views=("hflip", "cutout", "none"))
    with pytest.raises(
        ValueError, match=r"holds a run with another configuration \(it differs in \['views'\]\)"
    ):
        train.run(changed)
    assert sorted(p.name for p in (tmp_path / "unit").iterdir()) == ["config.json"]
    # A hyperparameter OKDPH does not use is no difference, however it was recorded
    # (older versions wrote a value for every one); one it uses is.
    run_dir = str(tmp_path / "unit")
    (tmp_path / "unit" / "config.json").write_text(
        json.dumps(dataclasses.replace(config, sam_rho=0.05, swa_start=0.5).to_json_dict())
    )
    train._check_run_dir(run_dir, config)  # no error
    (tmp_path / "unit" / "config.json").write_text(
        json.dumps(dataclasses.replace(config, fusion_gamma=0.25, sam_rho=0.05).to_json_dict())
    )
    with pytest.raises(ValueError, match=r"it differs in \['fusion_gamma'\]\)"):
        train._check_run_dir(run_dir, config)


def test_mixed_bfloat16_trains_in_bfloat16_and_ships_float32(tmp_path, labelled_arrays):
    from okdph_keras import export  # noqa: PLC0415

    config = dataclasses.replace(
        config_for(tmp_path), precision="mixed_bfloat16", epochs=1, batch_size=32
    )
    results = train.run(config)
    assert keras.config.dtype_policy().name == "float32"  # restored after the run
    assert np.isfinite(results["students_mean_final_test_accuracy"])
    run_dir = str(tmp_path / "unit")
    checkpoint = checkpointing.load_state(run_dir)["checkpoint"]
    trained = keras.saving.load_model(os.path.join(run_dir, checkpoint)).students[0]
    convolutions = [layer for layer in trained.layers if isinstance(layer, keras.layers.Conv2D)]
    assert all(c.compute_dtype == "bfloat16" and c.kernel.dtype == "float32" for c in convolutions)
    # The shipped student: float32 layers with the trained weights. Its logits are those
    # of a float32 forward pass written out by hand, and differ from the bfloat16 ones by
    # bfloat16 rounding only.
    shipped = keras.saving.load_model(os.path.join(tmp_path, "saved", "unit", "student.keras"))
    assert all(layer.compute_dtype == "float32" for layer in shipped.layers)
    images = np.random.default_rng(0).uniform(size=(8, 8, 8, 1)).astype("float32")
    bfloat16_logits = trained(images).numpy().astype("float32")
    float32_logits = shipped(images).numpy()
    by_hand = images
    for layer in trained.layers[1:]:  # the same layers, run at float32 on float32 weights
        twin = layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})
        twin.build(by_hand.shape)
        twin.set_weights(layer.get_weights())
        by_hand = twin(by_hand, training=False).numpy()
    np.testing.assert_allclose(float32_logits, by_hand, rtol=1e-5, atol=1e-5)
    assert (
        0 < np.max(np.abs(bfloat16_logits - float32_logits)) < 0.05 * np.max(np.abs(by_hand)) + 0.05
    )
    metadata = export.export_student(run_dir, str(tmp_path / "export"), variants=["float32"])
    assert metadata["variants"]["float32"]["agreement"] == 1.0


def test_mixed_float16_scales_the_loss(tmp_path, labelled_arrays):
    config = dataclasses.replace(config_for(tmp_path), precision="mixed_float16")
    data = run_data.load_sources(config)
    with train.dtype_policy(config.precision):
        model = train.build_model(config, data.train)
        model.compile(optimizer=train.make_optimizer(config, 4))
    assert keras.config.dtype_policy().name == "float32"
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.students[0].layers[1].compute_dtype == "float16"
