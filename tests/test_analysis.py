"""okdph_keras.analysis: interpolation, landscape, sharpness, Hessian, CLI; checked in numpy."""

import collections
import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import IMAGE_SHAPE, NUM_CLASSES, combine, np_cross_entropy, randomize, tiny_student

from okdph_keras import analysis, checkpointing
from okdph_keras.analysis import cli
from okdph_keras.config import Config
from okdph_keras.data import sources
from okdph_keras.model import OKDPH


def linear_model(inputs, outputs, use_bias=True):
    x = keras.Input((inputs,))
    return keras.Model(x, keras.layers.Dense(outputs, use_bias=use_bias)(x))


def mse(targets, outputs):
    return tf.reduce_mean(tf.square(outputs - tf.cast(targets, outputs.dtype)))


def np_loss(model, images, labels, weights=None):
    """Cross-entropy of `model` (or of a clone holding `weights`) computed in numpy."""
    if weights is not None:
        model = keras.models.clone_model(model)
        model.set_weights(weights)
    return np_cross_entropy(labels, np.asarray(model(images, training=False), np.float64))


def snapshot(model):
    return [np.array(v) for v in model.variables]


def assert_unchanged(model, before):
    for variable, value in zip(model.variables, before):
        np.testing.assert_array_equal(np.asarray(variable), value)


def okdph_pair(rng, **kwargs):
    model = OKDPH(lambda: tiny_student(**kwargs), identical_init=False, seed=0)
    for student in model.students:
        randomize(student, rng)
    return model


# --- interpolation ---------------------------------------------------------------------------


def test_interpolation_of_a_linear_model_matches_numpy(rng):
    x = rng.normal(size=(20, 3)).astype("float32")
    labels = rng.integers(0, 4, size=20)
    model_a, model_b = linear_model(3, 4), linear_model(3, 4)
    randomize(model_a, rng)
    randomize(model_b, rng)
    before = snapshot(model_a)
    alphas = [-0.5, 0.0, 0.3, 1.0, 1.5]
    curve = analysis.interpolate(model_a, model_b, (x, labels), alphas, batch_size=7)

    (kernel_a, bias_a), (kernel_b, bias_b) = model_a.get_weights(), model_b.get_weights()
    for k, alpha in enumerate(alphas):
        kernel = (1 - alpha) * kernel_a.astype(np.float64) + alpha * kernel_b
        bias = (1 - alpha) * bias_a.astype(np.float64) + alpha * bias_b
        logits = x @ kernel + bias
        np.testing.assert_allclose(curve.loss[k], np_cross_entropy(labels, logits), rtol=1e-5)
        np.testing.assert_allclose(curve.accuracy[k], np.mean(logits.argmax(-1) == labels))
    np.testing.assert_allclose(curve.positions, alphas)
    np.testing.assert_allclose(curve.loss[1], np_loss(model_a, x, labels), rtol=1e-5)
    np.testing.assert_allclose(curve.loss[3], np_loss(model_b, x, labels), rtol=1e-5)
    assert_unchanged(model_a, before)


def test_path_through_the_hwm_passes_the_hwm_at_its_midpoint(rng, batch):
    images, labels, _ = batch
    model = okdph_pair(rng, dropout=0.25)  # dropout: integer seed state rides along
    student_0, student_1 = model.students
    weights = [s.get_weights() for s in model.students]
    before = [snapshot(s) for s in model.students]

    path = analysis.interpolate_through(
        [student_0, model.hybrid_model(), student_1], (images, labels), points_per_segment=2
    )
    np.testing.assert_allclose(path.positions, [0.0, 0.5, 1.0, 1.5, 2.0])
    hwm_loss = np_loss(student_0, images, labels, combine(weights, [0.5, 0.5]))
    quarter_loss = np_loss(student_0, images, labels, combine(weights, [0.75, 0.25]))
    np.testing.assert_allclose(path.loss[2], hwm_loss, rtol=1e-5)
    np.testing.assert_allclose(path.loss[1], quarter_loss, rtol=1e-5)  # BN statistics mixed too
    np.testing.assert_allclose(path.loss[0], np_loss(student_0, images, labels), rtol=1e-5)
    np.testing.assert_allclose(path.loss[4], np_loss(student_1, images, labels), rtol=1e-5)
    assert abs(quarter_loss - hwm_loss) > 1e-3  # the checks above tell points apart

    line = analysis.interpolate(student_0, student_1, (images, labels), [0.5])
    np.testing.assert_allclose(line.loss[0], hwm_loss, rtol=1e-5)  # M = 2, r = (1/2, 1/2)
    for student, values in zip(model.students, before):
        assert_unchanged(student, values)


def test_loss_barrier_against_the_chord():
    curve = analysis.Curve(np.array([0.0, 0.5, 2.0]), np.array([1.0, 3.0, 2.0]), np.zeros(3))
    assert analysis.loss_barrier(curve) == pytest.approx(3.0 - 1.25)


# --- directions and the 2-D landscape -------------------------------------------------------


def test_filter_normalized_direction_matches_each_filter_norm(rng):
    model = tiny_student()
    randomize(model, rng)
    direction = analysis.filter_normalized_direction(model, seed=5)
    assert [d.shape for d in direction] == [tuple(v.shape) for v in model.trainable_variables]
    for variable, d in zip(model.trainable_variables, direction):
        w = np.asarray(variable, np.float64)
        if w.ndim < 2:
            np.testing.assert_array_equal(d, 0.0)  # biases and BN scale/offset
            continue
        axes = tuple(range(w.ndim - 1))
        np.testing.assert_allclose(
            np.linalg.norm(d.reshape(-1, w.shape[-1]), axis=0),
            np.linalg.norm(w.reshape(-1, w.shape[-1]), axis=0),
            rtol=1e-5,
        )
        cosine = np.sum(d * w, axis=axes) / np.sum(w * w, axis=axes)
        assert np.all(np.abs(cosine) < 0.99)  # a random direction, not the weights
    again = analysis.filter_normalized_direction(model, seed=5)
    other = analysis.filter_normalized_direction(model, seed=6)
    assert all(np.array_equal(a, b) for a, b in zip(direction, again))
    assert not np.array_equal(direction[0], other[0])

    full = analysis.filter_normalized_direction(model, seed=5, ignore_biasbn=False)
    for variable, d in zip(model.trainable_variables, full):
        if len(variable.shape) == 1:
            np.testing.assert_allclose(np.linalg.norm(d), np.linalg.norm(variable), rtol=1e-5)


def test_landscape_centre_and_corner_match_numpy(rng, batch, tmp_path):
    images, labels, _ = batch
    model = tiny_student()
    randomize(model, rng)
    before = snapshot(model)
    grid = analysis.landscape_2d(model, (images, labels), span=0.5, resolution=3, seed=3)
    np.testing.assert_allclose(grid.alphas, [-0.5, 0.0, 0.5])
    assert grid.loss.shape == grid.accuracy.shape == (3, 3)
    np.testing.assert_allclose(grid.loss[1, 1], np_loss(model, images, labels), rtol=1e-5)

    directions_rng = np.random.default_rng(3)
    d1 = analysis.filter_normalized_direction(model, directions_rng)
    d2 = analysis.filter_normalized_direction(model, directions_rng)
    trainable = [
        np.asarray(v) + -0.5 * a + 0.5 * b for v, a, b in zip(model.trainable_variables, d1, d2)
    ]
    clone = keras.models.clone_model(model)
    for variable, value in zip(clone.trainable_variables, trainable):
        variable.assign(value)
    for variable, value in zip(clone.non_trainable_variables, model.non_trainable_variables):
        variable.assign(value)
    np.testing.assert_allclose(grid.loss[0, 2], np_loss(clone, images, labels), rtol=1e-5)
    assert not np.isclose(grid.loss[0, 2], grid.loss[2, 0])  # rows are alpha, columns beta
    assert_unchanged(model, before)

    png = tmp_path / "landscape.png"
    analysis.plot_landscape(grid, str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- flatness ------------------------------------------------------------------------------


def test_perturbation_sharpness_of_a_quadratic_matches_the_closed_form(rng):
    # L(W) = mean_{i,j} (x_i . (W - W*)_j)^2 at W = W*: a perturbation eps_j of column j
    # raises it by (1/k) sum_j eps_j^T C eps_j, C = X^T X / n. With ||eps_j|| = rho ||w_j||
    # and a uniform direction, E[eps_j^T C eps_j] = rho^2 ||w_j||^2 tr(C) / d.
    n, d, k, rho = 12, 3, 2, 0.1
    x = (rng.normal(size=(n, d)) * [2.0, 1.0, 0.5]).astype("float32")
    model = linear_model(d, k, use_bias=False)
    randomize(model, rng)
    w = np.asarray(model.trainable_variables[0], np.float64)
    targets = (x.astype(np.float64) @ w).astype("float32")
    c = x.T.astype(np.float64) @ x / n
    filter_norms = np.sum(w**2, axis=0)

    result = analysis.perturbation_sharpness(
        model, (x, targets), rho, samples=400, seed=1, loss_fn=mse
    )

    assert result.base_loss < 1e-10
    expected_mean = rho**2 * filter_norms.sum() * np.trace(c) / d / k
    np.testing.assert_allclose(result.mean_increase, expected_mean, rtol=0.1)
    assert result.max_increase <= rho**2 * filter_norms.sum() * np.linalg.eigvalsh(c).max() / k * (
        1 + 1e-4
    )
    assert result.max_increase == result.increases.max() and len(result.increases) == 400

    eps = (
        rho
        * analysis.filter_normalized_direction(
            model, np.random.default_rng(1), ignore_biasbn=False
        )[0]
    )
    first = np.einsum("aj,ab,bj->", eps, c, eps) / k
    np.testing.assert_allclose(result.increases[0], first, rtol=1e-4)


def test_perturbation_sharpness_vanishes_with_the_radius(rng, batch):
    images, labels, _ = batch
    model = tiny_student()
    randomize(model, rng)
    tiny = analysis.perturbation_sharpness(model, (images, labels), 1e-7, samples=3, seed=0)
    large = analysis.perturbation_sharpness(model, (images, labels), 0.5, samples=3, seed=0)
    assert np.all(np.abs(tiny.increases) < 1e-5)
    assert tiny.base_loss == pytest.approx(np_loss(model, images, labels), rel=1e-5)
    assert np.abs(large.increases).max() > 1e-2


def test_top_hessian_eigenvalue_of_least_squares_matches_eigvalsh(rng):
    # Dense then BatchNorm in inference mode (no scale/offset): z_j = (x~ . w~_j - mu_j) / s_j
    # with x~ = [x, 1], s_j^2 = var_j + eps. L = (1/(n k)) sum_ij (z_ij - y_ij)^2 is quadratic
    # in the Dense weights, with Hessian (2 / (n k)) X~^T X~ (x) diag(1 / s^2) everywhere.
    n, d, k = 10, 3, 2
    x = (rng.normal(size=(n, d)) * [3.0, 1.0, 0.5]).astype("float32")
    targets = rng.normal(size=(n, k)).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((d,)),
            keras.layers.Dense(k),
            keras.layers.BatchNormalization(center=False, scale=False, epsilon=1e-3),
        ]
    )
    randomize(model, rng)
    variance = np.asarray(model.layers[1].moving_variance, np.float64) + 1e-3
    x1 = np.c_[x.astype(np.float64), np.ones(n)]
    hessian = 2.0 / (n * k) * np.kron(x1.T @ x1, np.diag(1.0 / variance))
    expected = np.linalg.eigvalsh(hessian).max()

    # Batches of 4, 4 and 2: the Hessian weighs them by size.
    result = analysis.top_hessian_eigenvalue(
        model, (x, targets), iterations=300, tolerance=1e-6, seed=0, loss_fn=mse, batch_size=4
    )
    np.testing.assert_allclose(result.eigenvalue, expected, rtol=1e-4)
    assert result.converged and 2 <= result.iterations < 300 and result.examples == n

    capped = analysis.top_hessian_eigenvalue(model, (x, targets), iterations=1, loss_fn=mse)
    assert capped.iterations == 1 and not capped.converged


def test_top_hessian_eigenvalue_is_deterministic_and_stateless(rng, batch):
    images, labels, _ = batch
    model = tiny_student()
    randomize(model, rng)
    before = snapshot(model)
    first, second = (
        analysis.top_hessian_eigenvalue(model, (images, labels), iterations=4, seed=2)
        for _ in range(2)
    )
    assert first == second and np.isfinite(first.eigenvalue)
    assert_unchanged(model, before)


# --- bad input -------------------------------------------------------------------------------


def test_bad_arguments_name_the_value(rng, batch):
    images, labels, _ = batch
    model = tiny_student()
    data = (images, labels)
    with pytest.raises(ValueError, match=r"radius=0 .*> 0"):
        analysis.perturbation_sharpness(model, data, radius=0)
    with pytest.raises(ValueError, match=r"radius=-0.1"):
        analysis.perturbation_sharpness(model, data, radius=-0.1)
    with pytest.raises(ValueError, match=r"resolution=1 .*>= 2"):
        analysis.landscape_2d(model, data, resolution=1)
    with pytest.raises(ValueError, match=r"tolerance=0"):
        analysis.top_hessian_eigenvalue(model, data, tolerance=0)
    with pytest.raises(ValueError, match="does not match"):
        analysis.interpolate(model, tiny_student(width=3), data)
    with pytest.raises(ValueError, match="as many labels as images"):
        analysis.interpolate(model, tiny_student(), (images, labels[:3]))
    with pytest.raises(ValueError, match="at least 2 models"):
        analysis.interpolate_through([model], data)


# --- command line ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """An OKDPH .keras file of 2 different tiny students, a student .keras, and an .npz of data."""
    rng = np.random.default_rng(7)
    root = tmp_path_factory.mktemp("analysis")
    model = okdph_pair(rng)
    model.save(root / "okdph.keras")
    model.students[0].save(root / "student.keras")
    images = rng.uniform(0, 1, size=(12, *IMAGE_SHAPE)).astype("float32")
    labels = rng.integers(0, NUM_CLASSES, size=12)
    np.savez(root / "data.npz", images=images, labels=labels)
    return root, model, images, labels


def test_cli_on_a_keras_file(saved, tmp_path, capsys):
    root, model, images, labels = saved
    common = [
        str(root / "okdph.keras"),
        "--output",
        str(tmp_path),
        "--data",
        str(root / "data.npz"),
    ]
    losses = [np_loss(s, images, labels) for s in model.students]

    assert cli.main(["interpolate", *common, "--steps", "2"]) == 0
    arrays = np.load(tmp_path / "interpolation_student_0_student_1.npz")
    np.testing.assert_allclose(arrays["line_alphas"], [0.0, 0.5, 1.0])
    np.testing.assert_allclose(arrays["line_loss"][[0, 2]], losses, rtol=1e-5)
    np.testing.assert_allclose(arrays["path_loss"][2], arrays["line_loss"][1], rtol=1e-6)
    summary = json.loads((tmp_path / "interpolation_student_0_student_1.json").read_text())
    assert summary["hwm_loss"] == pytest.approx(arrays["path_loss"][2])
    assert (tmp_path / "interpolation_student_0_student_1.png").stat().st_size > 0

    assert (
        cli.main(["landscape", *common, "--network", "1", "--resolution", "3", "--span", "0.2"])
        == 0
    )
    grid = np.load(tmp_path / "landscape_student_1.npz")
    assert grid["loss"].shape == (3, 3)
    np.testing.assert_allclose(grid["loss"][1, 1], losses[1], rtol=1e-5)
    assert (tmp_path / "landscape_student_1.png").exists()

    argv = [
        "flatness",
        *common,
        "--network",
        "hwm",
        "--radius",
        "0.01",
        "0.1",
        "--samples",
        "2",
        "--iterations",
        "3",
        "--hessian_batches",
        "1",
    ]
    assert cli.main(argv) == 0
    flatness = json.loads((tmp_path / "flatness_hwm.json").read_text())
    assert [r["radius"] for r in flatness["perturbation"]] == [0.01, 0.1]
    assert flatness["perturbation"][0]["base_loss"] == pytest.approx(summary["hwm_loss"], rel=1e-5)
    assert 1 <= flatness["hessian"]["iterations"] <= 3 and np.isfinite(
        flatness["hessian"]["eigenvalue"]
    )
    assert "row 3/3" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == sorted(  # atomic writes leave no temporary files
        f"{stem}.{ext}"
        for stem, exts in [
            ("interpolation_student_0_student_1", "npz png json"),
            ("landscape_student_1", "npz png json"),
            ("flatness_hwm", "json"),
        ]
        for ext in exts.split()
    )


def test_cli_on_a_run_directory_reads_and_preprocesses_its_data(
    saved, tmp_path, monkeypatch, capsys
):
    root, model, _, _ = saved
    rng = np.random.default_rng(3)
    train_images, test_images = (
        rng.integers(0, 256, size=(n, *IMAGE_SHAPE), dtype=np.uint8) for n in (6, 9)
    )
    test_labels = rng.integers(0, NUM_CLASSES, size=9)
    splits = collections.namedtuple("Sources", "train validation test")(
        sources.from_arrays(train_images, rng.integers(0, NUM_CLASSES, size=6)),
        None,
        sources.from_arrays(test_images, test_labels, class_names=list("abcde")),
    )
    monkeypatch.setattr("okdph_keras.run_data.load_sources", lambda config: splits)
    run = tmp_path / "run"
    config = Config(
        dataset="cifar10",
        model="resnet32",
        views=("hflip", "hflip", "none"),
        style="cifar",
        image_size=8,
        normalization=((0.5,), (0.25,)),
    )
    checkpointing.write_json_atomically(str(run / "config.json"), config.to_json_dict())
    checkpointing.write_json_atomically(
        str(run / "state.json"),
        {"epochs_done": 1, "checkpoint": "checkpoints/e.keras", "history": {}},
    )
    os.makedirs(run / "checkpoints")
    shutil.copyfile(root / "okdph.keras", run / "checkpoints" / "e.keras")

    out = tmp_path / "out"
    argv = ["interpolate", str(run), "--output", str(out), "--steps", "1", "--max_examples", "7"]
    assert cli.main(argv) == 0
    arrays = np.load(out / "interpolation_student_0_student_1.npz")
    normalised = (test_images[:7].astype(np.float32) / 255.0 - 0.5) / 0.25
    expected = [np_loss(s, normalised, test_labels[:7]) for s in model.students]
    np.testing.assert_allclose(arrays["line_loss"], expected, rtol=1e-5)
    with pytest.raises(SystemExit, match="1"):
        cli.main(["landscape", str(run), "--output", str(out), "--split", "validation"])
    assert "has no validation split" in capsys.readouterr().err


def test_cli_errors(saved, tmp_path, capsys):
    root, _, _, _ = saved
    okdph, student = str(root / "okdph.keras"), str(root / "student.keras")
    out, npz = ["--output", str(tmp_path)], ["--data", str(root / "data.npz")]
    cases = [
        (["landscape", str(tmp_path / "missing"), *out], 1, "does not exist"),
        (["landscape", okdph, *out], 1, "pass --data"),
        (["interpolate", student, *out, *npz], 1, "not an OKDPH model"),
        (
            ["landscape", okdph, *out, *npz, "--network", "2"],
            1,
            "Network '2' is out of range or unknown: the model has 2 student(s); give a student index "
            "from 0 to 1 or 'hwm'",
        ),
        (
            ["interpolate", okdph, *out, *npz, "--students", "0", "3"],
            1,
            "Network '3' is out of range",
        ),
        (["interpolate", okdph, *out, *npz, "--students", "0", "0"], 1, "two different students"),
        (["landscape", student, *out, *npz, "--network", "hwm"], 1, "needs an OKDPH model"),
        (["sharpen", okdph, *out], 2, "invalid choice: 'sharpen'"),
        (
            ["flatness", okdph, *out, "--radius", "0"],
            2,
            "--radius: 0 is not allowed; it must be > 0",
        ),
        (
            ["landscape", okdph, *out, "--resolution", "1"],
            2,
            "--resolution: 1 is not allowed; it must be >= 2",
        ),
    ]
    for argv, code, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == code, argv
        assert message in capsys.readouterr().err, argv
    assert not any(tmp_path.glob("*.npz"))
