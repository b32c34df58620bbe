"""Adaptive fusion: the relative distance against numpy, when it fuses, resuming, the method."""

import csv
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
from cifar_fixtures import prepare_fake_cifar
from helpers import randomize, tiny_student
from test_callbacks import assert_weights, expected_fusion, float_weights

from okdph_keras import OKDPH, Fusion, curves, methods, train
from okdph_keras.adaptive_fusion import AdaptiveFusion, relative_distance
from okdph_keras.config import Config
from okdph_keras.models import small_cnn

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def one_weight_student(value):
    student = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    student.layers[0].kernel.assign([[value]])
    return student


@pytest.mark.parametrize("a, b", [(1.0, 3.0), (-0.5, 2.0), (2.0, 2.0)])
def test_distance_of_two_one_weight_students_is_their_closed_form(a, b):
    students = [one_weight_student(a), one_weight_student(b)]
    # r = (1/2, 1/2): theta_h = (a + b) / 2, each student |a - b| / 2 away.
    np.testing.assert_allclose(
        relative_distance(students, [0.5, 0.5]), [abs(a - b) / abs(a + b)] * 2, rtol=1e-6
    )
    # r = (1/4, 3/4): student 1 is 3/4 |a - b| from the HWM, student 2 1/4 |a - b|.
    hwm = 0.25 * a + 0.75 * b
    np.testing.assert_allclose(
        relative_distance(students, [0.25, 0.75]),
        [0.75 * abs(a - b) / abs(hwm), 0.25 * abs(a - b) / abs(hwm)],
        rtol=1e-6,
    )


def test_distance_is_over_the_concatenated_trainable_weights(rng):
    students = [tiny_student() for _ in range(3)]
    for student in students:
        randomize(student, rng)  # BN statistics too: they must not count
    r = [0.2, 0.3, 0.5]
    flat = [np.concatenate([w.numpy().ravel() for w in s.trainable_weights]) for s in students]
    hwm = sum(c * w for c, w in zip(r, flat))
    expected = [np.linalg.norm(w - hwm) / np.linalg.norm(hwm) for w in flat]
    np.testing.assert_allclose(relative_distance(students, r), expected, rtol=1e-5)


@pytest.fixture
def model(rng):
    model = OKDPH(tiny_student, num_students=2, identical_init=False)
    randomize(model.students[0], rng)
    model.compile(optimizer="sgd")
    return model


def scale_students(model, scales):
    """Student m's trainable weights <- scales[m] * student 0's at the first call's values."""
    if not hasattr(model, "base"):
        model.base = [v.numpy() for v in model.students[0].trainable_variables]
    for student, scale in zip(model.students, scales):
        for variable, base in zip(student.trainable_variables, model.base):
            variable.assign(scale * base)


def run_epoch(fusion, epoch, validate=False):
    logs = {"loss": 1.0}
    fusion.on_epoch_begin(epoch)
    if validate:
        fusion.on_test_begin()
    fusion.on_epoch_end(epoch, logs)
    return logs


def test_fuses_on_exactly_the_epochs_whose_signal_reaches_the_threshold(model):
    fusion = AdaptiveFusion(threshold=0.05, gamma=0.5)
    fusion.set_model(model)
    # Students c_m * theta: the signal is |a - b| / |a + b| for scales (a, b).
    logged = []
    for epoch, scales in enumerate([(1.0, 1.1), (1.0, 1.2), (2.0, 2.0), (1.0, 1.5)]):
        scale_students(model, scales)
        before = float_weights(model)
        logs = run_epoch(fusion, epoch, validate=epoch == 3)
        logged.append((logs["fusion_signal"], logs["fused"]))
        if logs["fused"]:
            assert_weights(model, expected_fusion(before, [0.5, 0.5], 0.5))
        else:
            assert_weights(model, before)
    signals, fused = zip(*logged)
    np.testing.assert_allclose(signals, [0.1 / 2.1, 0.2 / 2.2, 0.0, 0.5 / 2.5], atol=1e-6)
    assert fused == (0.0, 1.0, 0.0, 1.0)
    # Once per epoch: validation's check and the epoch end's are one check.
    assert run_epoch(fusion, 4, validate=True)["fusion_signal"] == pytest.approx(0.5 * 0.2)


def test_the_signal_is_the_farthest_students_and_threshold_zero_always_fuses(model):
    model.coefficients.assign([0.25, 0.75])
    scale_students(model, (1.0, 2.0))  # theta_h = 1.75 theta: distances 0.75 / 1.75, 0.25 / 1.75
    fusion = AdaptiveFusion(threshold=1.0)
    fusion.set_model(model)
    assert run_epoch(fusion, 0)["fusion_signal"] == pytest.approx(0.75 / 1.75)
    scale_students(model, (1.0, 1.0))
    fusion = AdaptiveFusion(threshold=0.0)
    fusion.set_model(model)
    assert run_epoch(fusion, 0) == {"loss": 1.0, "fusion_signal": 0.0, "fused": 1.0}


def test_adaptive_gamma_leaves_the_students_at_one_minus_gamma_times_the_threshold(model):
    fusion = AdaptiveFusion(threshold=0.05, gamma=0.5, adaptive_gamma=True)
    fusion.set_model(model)
    scale_students(model, (1.0, 1.4))  # signal 0.4 / 2.4 = 1/6
    before = float_weights(model)
    assert run_epoch(fusion, 0)["fused"] == 1.0
    gamma = 1.0 - 0.5 * 0.05 * 6.0  # 1 - (1 - gamma) * threshold / signal
    assert_weights(model, expected_fusion(before, [0.5, 0.5], gamma))
    np.testing.assert_allclose(
        relative_distance(model.students, [0.5, 0.5]), [0.025] * 2, rtol=1e-5
    )


def test_threshold_zero_fuses_every_epoch_as_fixed_fusion_does(batch):
    images, labels, views = batch

    def fit(callback):
        keras.utils.set_random_seed(0)
        model = OKDPH(tiny_student, identical_init=False, seed=0)
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
        history = model.fit(
            views,
            labels,
            batch_size=8,
            epochs=3,
            shuffle=False,
            verbose=0,
            validation_data=(images, labels),
            callbacks=[callback],
        )
        return model, history.history

    adaptive, history = fit(AdaptiveFusion(threshold=0.0, gamma=0.3))
    fixed, fixed_history = fit(Fusion(gamma=0.3, every=1))
    assert history["fused"] == [1.0, 1.0, 1.0]
    assert all(s > 0 for s in history["fusion_signal"])
    assert_weights(adaptive, float_weights(fixed))
    assert history["val_student_0_ce"] == pytest.approx(fixed_history["val_student_0_ce"])


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"threshold": -0.1}, "threshold=-0.1 is not allowed; it must be a finite number >= 0"),
        ({"threshold": "high"}, "threshold='high' is not allowed"),
        ({"gamma": 1.5}, r"gamma=1.5 is not allowed; it must be a number in \[0, 1\]"),
        ({"adaptive_gamma": 1}, "adaptive_gamma=1 is not allowed; it must be True or False"),
    ],
)
def test_bad_arguments_name_the_value(arguments, message):
    with pytest.raises(ValueError, match=message):
        AdaptiveFusion(**arguments)


def test_a_model_without_fusion_is_refused():
    with pytest.raises(ValueError, match="an OKDPH model"):
        AdaptiveFusion().set_model(tiny_student())


def test_config_round_trip():
    fusion = AdaptiveFusion(threshold=0.1, gamma=0.7, adaptive_gamma=True)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(fusion))
    assert type(restored) is AdaptiveFusion
    assert restored.get_config() == {"threshold": 0.1, "gamma": 0.7, "adaptive_gamma": True}


def test_curves_plot_the_signal_and_mark_the_fusions(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(curves, "save_figure", lambda figure, path, **_: figures.append(figure))
    history = {"test_hwm_accuracy": [0.1] * 3, "test_hwm_ce": [2.0] * 3}
    curves.plot_curves(history, tmp_path / "plain.png")
    history.update(fusion_signal=[0.03, 0.06, 0.04], fused=[0.0, 1.0, 0.0])
    curves.plot_curves(history, tmp_path / "adaptive.png")
    plain, adaptive = figures
    assert len(plain.axes) == 2 and len(adaptive.axes) == 3
    signal, markers = adaptive.axes[2].get_lines()
    assert list(signal.get_ydata()) == [0.03, 0.06, 0.04]
    assert (list(markers.get_xdata()), list(markers.get_ydata())) == ([2], [0.06])


def small_cnn_model():
    keras.utils.set_random_seed(0)
    model = OKDPH(lambda: small_cnn(input_shape=(8, 8, 1), num_classes=10, width=4), seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    return model


def test_a_resumed_run_fuses_and_trains_as_an_uninterrupted_one(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, size=(64, 8, 8, 1)).astype("float32")
    labels = rng.integers(0, 10, size=64)
    views = np.stack([images, images[:, ::-1], images[:, :, ::-1]], axis=1)
    options = dict(batch_size=16, shuffle=False, verbose=0)
    # gamma = 1 resets the distance: epochs 1-4 measure about 0.011, 0.030, 0.051, 0.025.
    fusion = dict(threshold=0.04, gamma=1.0)

    straight = small_cnn_model()
    history = straight.fit(
        views, labels, epochs=4, callbacks=[AdaptiveFusion(**fusion)], **options
    ).history

    first = small_cnn_model()
    first_history = first.fit(
        views, labels, epochs=2, callbacks=[AdaptiveFusion(**fusion)], **options
    ).history
    keras.saving.save_model(first, tmp_path / "epoch_2.keras")
    resumed = keras.saving.load_model(tmp_path / "epoch_2.keras")
    second_history = resumed.fit(
        views, labels, epochs=4, initial_epoch=2, callbacks=[AdaptiveFusion(**fusion)], **options
    ).history

    assert set(second_history["fused"]) == {0.0, 1.0}, history  # the resumed half decides both ways
    assert first_history["fused"] + second_history["fused"] == history["fused"]
    np.testing.assert_allclose(
        first_history["fusion_signal"] + second_history["fusion_signal"],
        history["fusion_signal"],
        rtol=1e-5,
    )
    for expected, actual in zip(float_weights(straight), float_weights(resumed)):
        for e, a in zip(expected, actual):
            np.testing.assert_allclose(a, e, atol=1e-6)


def method_config(**overrides):
    values = dict(
        dataset="cifar10",
        model="vgg16",
        views=("hflip", "cutout", "none"),
        style="cifar",
        image_size=8,
        normalization=((0.5,) * 3, (0.25,) * 3),
        epochs=8,
        method="okdph_adaptive",
        run_name="r",
    )
    return Config(**{**values, **overrides}).resolved()


def test_okdph_adaptive_resolves_and_trains_okdph_with_adaptive_fusion(tmp_path):
    method = methods.get("okdph_adaptive")
    assert method.objective_name == "okdph" and method.uses_hwm
    assert "okdph_adaptive" in methods.run_names()
    config = method_config()
    # OKDPH's table for (cifar10, vgg16), the adaptive fusion's defaults, no interval.
    assert (config.omega, config.beta, config.fusion_gamma) == (0.3, 0.3, 1.0)
    assert (config.fusion_threshold, config.fusion_adaptive_gamma) == (0.05, False)
    assert config.fusion_every is None and config.fusion_unit is None
    hooks = dict(run_dir=str(tmp_path), bn_data=None, chief=True)
    config = method_config(fusion_threshold=0.2, fusion_adaptive_gamma=True, fusion_gamma=0.4)
    (fusion,) = method.callbacks(config, **hooks)
    assert type(fusion) is AdaptiveFusion
    assert fusion.get_config() == {"threshold": 0.2, "gamma": 0.4, "adaptive_gamma": True}
    assert method.callbacks(method_config(fusion_gamma=0.0), **hooks) == []
    with pytest.raises(ValueError, match="fusion_threshold=-1 is not allowed"):
        method_config(fusion_threshold=-1)
    assert train.build_model(method_config(model="small_cnn"), _Source()).objective == "okdph"


class _Source:
    image_shape = (8, 8, 3)
    num_classes = 10


def test_a_recipe_run_records_the_signal_and_the_fusions_in_history_csv(tmp_path):
    prepare_fake_cifar(tmp_path / "tfds", "cifar10", num_train=40, num_test=20)
    command = [
        sys.executable,
        "-m",
        "recipes.cifar10",
        "--smoke",
        "--method=okdph_adaptive",
        "--model=small_cnn",
        "--fusion_threshold=0",
        f"--data_dir={tmp_path / 'tfds'}",
        f"--output_dir={tmp_path / 'runs'}",
        f"--saved_models_dir={tmp_path / 'saved'}",
    ]
    completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=400)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-5000:]
    run_dir = tmp_path / "runs/cifar10_small_cnn_okdph_adaptive_m2_seed42_smoke"
    with open(run_dir / "history.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["fused"] for row in rows] == ["1.0", "1.0"]  # threshold 0: every epoch
    assert all(float(row["fusion_signal"]) > 0 for row in rows)
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
