"""Mean Teacher and the multi-branch methods inside `OKDPH`, against numpy and hand-rolled updates."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from okdph_keras import OKDPH, methods, step
from okdph_keras.models.multi_branch import multi_branch
from tests.helpers import IMAGE_SHAPE, NUM_CLASSES, np_cross_entropy, np_distillation, tiny_student


def rampup(epoch, length):
    """The closed form r(e; L) = exp(-5 (1 - min(e, L)/L)^2)."""
    return np.exp(-5.0 * (1.0 - min(epoch, length) / length) ** 2)


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def data(rng, views, batch=8):
    images = rng.uniform(0, 1, (batch, views, *IMAGE_SHAPE)).astype("float32")
    return images, rng.integers(0, NUM_CLASSES, batch)


def branch_network(branches, **options):
    return multi_branch(
        "small_cnn", NUM_CLASSES, IMAGE_SHAPE, branches=branches, width=4, **options
    )


def assert_follows_as_ema(model, batch, *, source, target, max_decay, steps=3):
    """Trains `steps` batches and checks `target`'s trainable weights against a numpy EMA
    of `source`'s, `a = min(1 - 1/(s+1), max_decay)` with `s` the steps taken."""
    expected = [v.numpy() for v in target.trainable_variables]
    for steps_taken in range(1, steps + 1):
        model.train_on_batch(*batch)
        a = min(1.0 - 1.0 / (steps_taken + 1), max_decay)
        expected = [
            a * t + (1 - a) * s.numpy() for t, s in zip(expected, source.trainable_variables)
        ]
    for variable, value in zip(target.trainable_variables, expected):
        np.testing.assert_allclose(variable.numpy(), value, rtol=1e-5, atol=1e-6)


def compiled(model, learning_rate=0.05):
    model.compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=0.9))
    return model


def test_mean_teacher_loss_is_ce_plus_ramped_softmax_mse(rng):
    student, teacher = rng.normal(0, 2, (2, 6, NUM_CLASSES))
    labels = rng.integers(0, NUM_CLASSES, 6)
    method = methods.get("mean_teacher")
    settings = method.settings({})
    outputs = {"students": [tf.constant(student), tf.constant(teacher)], "hwm": None}
    terms = method.losses(labels, outputs, settings, epoch=tf.constant(2.0), training=True)
    mse = np.mean((softmax(student) - softmax(teacher)) ** 2)
    expected = np_cross_entropy(labels, student) + 10.0 * rampup(2, 5) * mse
    np.testing.assert_allclose(float(terms["total"]), expected, rtol=1e-6)
    assert settings["ema_decay"] == 0.99


def test_mean_teacher_follows_the_student_as_a_hand_rolled_ema(rng):
    model = compiled(OKDPH(tiny_student, objective="mean_teacher", identical_init=False, seed=0))
    student, teacher = model.students
    teacher_statistics = [v.numpy() for v in teacher.non_trainable_variables]
    assert_follows_as_ema(model, data(rng, 3), source=student, target=teacher, max_decay=0.99)
    # Its BatchNorm statistics are its own (from its forward passes), not averaged.
    moved = [
        not np.allclose(v.numpy(), s)
        for v, s in zip(teacher.non_trainable_variables, teacher_statistics)
    ]
    assert any(moved)
    assert not np.allclose(
        teacher.non_trainable_variables[0].numpy(), student.non_trainable_variables[0].numpy()
    )


def test_mean_teacher_reads_the_epoch_the_counter_sets(rng):
    model = compiled(OKDPH(tiny_student, objective="mean_teacher", seed=0))
    images, labels = data(rng, 3)
    model.fit(images, labels, batch_size=8, epochs=3, verbose=0)
    assert float(model.epoch.numpy()) == 2.0  # set at the start of the last epoch
    with pytest.raises(ValueError, match="2 for mean_teacher"):
        OKDPH(tiny_student, num_students=3, objective="mean_teacher")


def test_one_total_matches_numpy_at_a_ramped_weight(rng):
    model = OKDPH(lambda: branch_network(2), objective="one", seed=0)
    images, labels = data(rng, 3)
    views = [images[:, k] for k in range(3)]
    epoch = 40.0
    outputs = step.forward(
        model.students, views, labels, tf.constant([0.5, 0.5]), objective="one", epoch=epoch
    )
    network, gate = model.students
    raw = network(views[0], training=True)  # BatchNorm in training mode: batch statistics
    z = raw["logits"].numpy().astype(np.float64)
    g = gate(raw["trunk"][:, None, None, :], training=True).numpy().astype(np.float64)
    teacher = np.einsum("bm,bmc->bc", g, z)
    branches = [z[:, 0], z[:, 1]]
    expected = (
        sum(np_cross_entropy(labels, b) for b in branches)
        + np_cross_entropy(labels, teacher)
        + rampup(epoch, 80) * sum(np_distillation(teacher, b, 3.0) for b in branches)
    )
    np.testing.assert_allclose(float(outputs.total), expected, rtol=1e-4)


def test_cl_ilr_scales_the_trunk_gradient_by_one_over_m(rng):
    build = methods.get("cl_ilr").network_builder(
        "small_cnn", NUM_CLASSES, IMAGE_SHAPE, num_students=3
    )
    scaled = build()  # the method's own network
    plain = multi_branch("small_cnn", NUM_CLASSES, IMAGE_SHAPE, branches=3)
    plain.set_weights(scaled.get_weights())
    images = tf.constant(rng.uniform(0, 1, (4, *IMAGE_SHAPE)).astype("float32"))
    upstream = tf.constant(rng.normal(0, 1, (4, 3, NUM_CLASSES)).astype("float32"))

    def gradients(network):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(upstream * network(images, training=True)["logits"])
        return [g.numpy() for g in tape.gradient(loss, network.trainable_variables)]

    with_scale, without = gradients(scaled), gradients(plain)
    trunk_model = keras.Model(scaled.inputs, scaled.output["trunk"])
    trunk = {id(v) for v in trunk_model.trainable_variables}
    in_trunk = [id(v) in trunk for v in scaled.trainable_variables]
    assert 0 < sum(in_trunk) < len(in_trunk)
    for value, reference, shared in zip(with_scale, without, in_trunk):
        factor = 1.0 / 3.0 if shared else 1.0
        np.testing.assert_allclose(value, factor * reference, rtol=1e-4, atol=1e-6)


def test_okddip_refuses_one_peer():
    with pytest.raises(ValueError, match="an integer >= 3"):
        OKDPH(lambda: branch_network(2), objective="okddip")


def test_pcl_temporal_mean_follows_the_network_as_a_hand_rolled_ema(rng):
    model = compiled(
        OKDPH(lambda: branch_network(2, per_branch_inputs=True), objective="pcl", seed=0)
    )
    network, ensemble, mean = model.students
    assert_follows_as_ema(model, data(rng, 3), source=network, target=mean, max_decay=0.999)
    assert ensemble.kernel.shape == (2 * network.output["features"].shape[-1], NUM_CLASSES)


@pytest.mark.parametrize(
    "name, branches", [("one", 2), ("cl_ilr", 2), ("okddip", 3), ("ffl", 2), ("pcl", 2)]
)
def test_multi_branch_methods_train_save_and_export_each_branch(tmp_path, rng, name, branches):
    per_branch = name == "pcl"
    model = compiled(
        OKDPH(
            lambda: branch_network(branches, per_branch_inputs=per_branch), objective=name, seed=0
        )
    )
    images, labels = data(rng, branches + 1)
    before = [
        v.numpy()
        for s in model.students[: 2 if per_branch else None]
        for v in s.trainable_variables
    ]
    model.fit(images, labels, batch_size=8, epochs=1, verbose=0)
    after = [
        v.numpy()
        for s in model.students[: 2 if per_branch else None]
        for v in s.trainable_variables
    ]
    assert all(not np.array_equal(a, b) for a, b in zip(before, after))  # modules train too

    test_images = images[:, 0]
    logits = model(test_images).numpy()
    assert logits.shape == (8, branches, NUM_CLASSES)
    for k, student in enumerate(model.student_models()):
        assert isinstance(student.output, keras.KerasTensor) and len(student.inputs) == 1
        np.testing.assert_allclose(student(test_images).numpy(), logits[:, k], rtol=1e-5, atol=1e-5)

    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(loaded(test_images).numpy(), logits, rtol=1e-6, atol=1e-6)
    assert len(loaded.students) == len(model.students)
    loaded.fit(images, labels, batch_size=8, epochs=1, verbose=0)  # resumes training


def test_module_parameter_counts_match_the_hand_computed_figures():
    # ResNet-32 on CIFAR-10 (BASELINES.md 2.2-2.6): trunk output 32 channels, branch features 64.
    def count(module):
        return sum(int(np.prod(v.shape)) for v in module.trainable_variables)

    def model(name, branches):
        build = methods.get(name).network_builder(
            "resnet32", 10, (32, 32, 3), num_students=branches
        )
        return OKDPH(build, objective=name, seed=0)

    one = model("one", 2).students
    assert count(one[1]) == (32 * 2 + 2) + 2 * 2  # Dense(32 -> m) + BatchNorm(m) scale, offset
    okddip = model("okddip", 4).students
    assert count(okddip[1]) == 2 * 64 * 8  # W_q, W_k: 64 -> 8, no bias
    ffl = model("ffl", 2).students
    assert count(ffl[1]) == 9728 + 64 * 10 + 10  # the fusion module and its classifier
    pcl = model("pcl", 2).students
    assert count(pcl[1]) == 2 * 64 * 10 + 10  # en_fc on the concatenated features
    assert count(pcl[2]) == count(pcl[0])  # the temporal mean: the network's shape
