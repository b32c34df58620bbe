"""Beyond the paper: groups of several architectures and K hybrids, against numpy."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import combine, np_cross_entropy, np_distillation, randomize, tiny_student

import okdph_keras
from okdph_keras import OKDPH, config, hybrid, step
from okdph_keras import students as students_lib

SETTINGS = dict(omega=0.7, beta=0.6, temperature=3.0)


def randomized(width, rng, count):
    students = [tiny_student(width=width) for _ in range(count)]
    for student in students:
        randomize(student, rng)
    return students


def distinct_views(images, count, rng):
    """`count` different views (noise, not scaling, which BatchNorm would undo)."""
    return [images + rng.normal(0, 0.5, images.shape).astype("float32") for _ in range(count)]


def reference_logits(weights, width, images):
    """Logits of a separately built model of `width` holding `weights` (numpy)."""
    reference = tiny_student(width=width)
    reference.set_weights(weights)
    return reference(images, training=True).numpy()


def np_group_total(z, z_h, labels, groups):
    """sum_m [omega CE_m + (1-omega) CE_{h,g}] (CE_m alone in a group of one) + beta KD."""
    omega, beta, tau = SETTINGS["omega"], SETTINGS["beta"], SETTINGS["temperature"]
    z_e = (sum(z) + sum(z_h)) / (len(z) + len(z_h))
    total, hybrids = 0.0, iter(z_h)
    for start, stop in groups:
        ce = [np_cross_entropy(labels, z[m]) for m in range(start, stop)]
        if stop - start == 1:
            total += ce[0]
        else:
            total += omega * sum(ce) + (stop - start) * (1 - omega) * np_cross_entropy(
                labels, next(hybrids)
            )
    return total + beta * sum(np_distillation(z_e, z_m, tau) for z_m in z)


@pytest.mark.parametrize("sizes", [(2, 1), (2, 2), (1, 3)])
def test_group_losses_match_numpy_with_one_hwm_per_group_of_two_or_more(sizes, rng, batch):
    images, labels, _ = batch
    widths = (4, 2)
    students = [s for width, n in zip(widths, sizes) for s in randomized(width, rng, n)]
    groups = [(0, sizes[0]), (sizes[0], sum(sizes))]
    hybrids = [(g, bounds) for g, bounds in enumerate(groups) if bounds[1] - bounds[0] >= 2]
    views = distinct_views(images, len(students) + len(hybrids), rng)
    r = np.concatenate(
        [np.linspace(1, 2, b - a) / np.linspace(1, 2, b - a).sum() for a, b in groups]
    )

    outputs = step.forward(
        students, views, labels, tf.constant(r, tf.float32), objective="okdph_groups", **SETTINGS
    )

    weights = [s.get_weights() for s in students]
    z = [
        reference_logits(weights[m], widths[m >= sizes[0]], views[m]) for m in range(len(students))
    ]
    z_h = [
        reference_logits(combine(weights[a:b], r[a:b]), widths[g], views[len(students) + j])
        for j, (g, (a, b)) in enumerate(hybrids)
    ]
    for m, logits in enumerate(outputs.student_logits):
        np.testing.assert_allclose(logits.numpy(), z[m], rtol=1e-4, atol=1e-5)
    assert len(outputs.hwms) == len(hybrids)
    for (logits, ce), expected in zip(outputs.hwms, z_h):
        np.testing.assert_allclose(logits.numpy(), expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(ce.numpy(), np_cross_entropy(labels, expected), rtol=1e-5)
    np.testing.assert_allclose(
        outputs.total.numpy(), np_group_total(z, z_h, labels, groups), rtol=1e-5
    )


def test_a_group_hwm_gives_its_students_r_m_times_its_gradient(rng, batch):
    """d(total)/d(theta_m) through the HWM only: (1-omega)*|g|*r_m*grad at theta_h."""
    images, labels, _ = batch
    students = randomized(4, rng, 2) + randomized(2, rng, 1)
    views = [images] * 4
    r = tf.constant([0.3, 0.7, 1.0])
    options = dict(objective="okdph_groups", omega=0.0, beta=0.0, temperature=1.0)
    gradients, _ = step.compute_gradients(students, views, labels, r, **options)
    # The same HWM as one separately built model, its CE differentiated alone.
    probe = tiny_student(width=4)
    probe.set_weights(combine([s.get_weights() for s in students[:2]], [0.3, 0.7]))
    with tf.GradientTape() as tape:
        ce = keras.losses.sparse_categorical_crossentropy(
            labels, probe(images, training=True), from_logits=True
        )
        ce = tf.reduce_mean(ce)
    at_hwm = tape.gradient(ce, probe.trainable_variables)
    per_student = len(students[0].trainable_variables)
    for m, r_m in enumerate((0.3, 0.7)):
        for got, expected in zip(gradients[m * per_student : (m + 1) * per_student], at_hwm):
            np.testing.assert_allclose(got.numpy(), 2 * r_m * expected.numpy(), atol=1e-5)
    # The small student's only loss is its own CE (omega weighs nothing for it).
    small = tiny_student(width=2)
    small.set_weights(students[2].get_weights())
    with tf.GradientTape() as tape:
        own = tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(
                labels, small(images, training=True), from_logits=True
            )
        )
    for got, expected in zip(
        gradients[2 * per_student :], tape.gradient(own, small.trainable_variables)
    ):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-5)


def groups_model(sizes=(2, 2), **kwargs):
    builders = [lambda: tiny_student(width=4), lambda: tiny_student(width=2)]
    return OKDPH(list(zip(builders, sizes)), objective="okdph_groups", seed=3, **kwargs)


def test_groups_take_one_view_per_network_in_the_documented_order(batch):
    model = groups_model((2, 1))
    assert model.network_names() == ["student_0", "student_1", "student_2", "hwm_0"]
    assert model.num_students == 3
    with pytest.raises(ValueError, match=r"takes 4 views, one per network \(student_0, "):
        model(tuple(np.asarray(batch[2][:, :3]).transpose(1, 0, 2, 3, 4)))


def test_groups_fuse_each_group_toward_its_own_hwm(rng):
    model = groups_model((2, 2), identical_init=False)
    for student in model.students:
        randomize(student, rng)
    before = [s.get_weights() for s in model.students]
    model.coefficients.assign([0.25, 0.75, 0.6, 0.4])
    model.fuse(0.5)
    for a, b, r in ((0, 2, [0.25, 0.75]), (2, 4, [0.6, 0.4])):
        hwm_weights = combine(before[a:b], r)
        for m in range(a, b):
            expected = combine([hwm_weights, before[m]], [0.5, 0.5])
            for got, want in zip(model.students[m].get_weights(), expected):
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        model.hybrid_model(1).get_weights()[0],
        combine([s.get_weights() for s in model.students[2:]], [0.6, 0.4])[0],
        rtol=1e-6,
    )


def test_groups_start_identical_within_each_group_and_survive_saving(tmp_path, batch):
    model = groups_model((2, 2), hybrid="dirichlet")
    for a, b in ((0, 1), (2, 3)):
        for u, v in zip(model.students[a].get_weights(), model.students[b].get_weights()):
            np.testing.assert_array_equal(u, v)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    coefficients = model.next_coefficients().numpy()
    np.testing.assert_allclose([coefficients[:2].sum(), coefficients[2:].sum()], [1, 1], rtol=1e-6)
    assert not np.allclose(coefficients[:2], coefficients[2:])  # each group its own draw
    images, labels, _ = batch
    views = np.repeat(images[:, None], 6, axis=1) + np.arange(6)[None, :, None, None, None] * 0.1
    model.fit(views, labels, epochs=1, verbose=0)
    path = str(tmp_path / "groups.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.network_names() == model.network_names()
    np.testing.assert_allclose(loaded.predict(views, verbose=0), model.predict(views, verbose=0))


def test_one_group_is_okdph_draw_for_draw(batch):
    images, labels, views = batch
    trained = []
    for objective, students in (("okdph", lambda: tiny_student()), ("okdph_groups", None)):
        keras.utils.set_random_seed(7)
        if students is None:
            model = OKDPH([(lambda: tiny_student(), 2)], objective="okdph_groups", seed=5)
        else:
            model = OKDPH(students, num_students=2, objective=objective, seed=5)
        model.hybrid = "dirichlet"
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        model.fit(views, labels, batch_size=8, epochs=1, verbose=0, shuffle=False)
        trained.append([w for s in model.students for w in s.get_weights()])
    for a, b in zip(*trained):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "groups, message",
    [
        ([[tiny_student(width=4), tiny_student(width=2)]], "Group 0 mixes architectures"),
        ([(lambda: tiny_student(width=4), 1), (lambda: tiny_student(width=4), 2)], "same arch"),
        ([(lambda: tiny_student(width=4), 1), (lambda: tiny_student(width=2), 1)], "sizes"),
        (
            [(lambda: tiny_student(width=4), 2), (lambda: tiny_student(num_classes=7), 2)],
            r"same logits: group 0 logits \d+, group 1 logits 7",
        ),
        ([(lambda: tiny_student(), 0)], r"the count of group 0=0 is not allowed"),
        ([("resnet", 2)], r"group 0=\('resnet', 2\) is not allowed"),
    ],
)
def test_bad_groups_are_refused_clearly(groups, message):
    with pytest.raises(ValueError, match=message):
        OKDPH(groups, objective="okdph_groups")


def test_a_flat_list_reads_as_its_groups():
    students = [tiny_student(width=4), tiny_student(width=4), tiny_student(width=2)]
    assert students_lib.group_bounds(students) == [(0, 2), (2, 3)]
    assert students_lib.make_groups(students) == students


def np_hwm_samples_total(z, z_h, labels):
    omega, beta, tau = SETTINGS["omega"], SETTINGS["beta"], SETTINGS["temperature"]
    z_e = (sum(z) + sum(z_h)) / (len(z) + len(z_h))
    ce_h = np.mean([np_cross_entropy(labels, h) for h in z_h])
    ce = [np_cross_entropy(labels, z_m) for z_m in z]
    kd = [np_distillation(z_e, z_m, tau) for z_m in z]
    return omega * sum(ce) + len(z) * (1 - omega) * ce_h + beta * sum(kd)


def test_k_hybrids_match_numpy_and_keep_the_mean_draw(rng, batch):
    images, labels, _ = batch
    model = OKDPH(
        lambda: tiny_student(),
        num_students=3,
        objective="okdph_multi_hwm",
        seed=11,
        settings={"hybrid_samples": 4},
        identical_init=False,
    )
    for student in model.students:
        randomize(student, rng)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    r = model.next_coefficients().numpy()
    # The draws are K independent Dir(1) vectors from (seed, step), drawn here again.
    expected_r = np.stack(
        [
            hybrid.sample_coefficients("dirichlet", 3, seed=[11, 0], samples=4).numpy()[k]
            for k in range(4)
        ]
    )
    np.testing.assert_allclose(r, expected_r, rtol=1e-6)
    assert np.linalg.matrix_rank(r) == 3  # four different hybrids
    np.testing.assert_allclose(model.coefficients.numpy(), r.mean(axis=0), rtol=1e-6)

    views = distinct_views(images, 4, rng)
    outputs = step.forward(
        model.students,
        views,
        labels,
        tf.constant(r),
        objective="okdph_multi_hwm",
        hybrid_samples=4,
        **SETTINGS,
    )
    weights = [s.get_weights() for s in model.students]
    z = [reference_logits(weights[m], 4, views[m]) for m in range(3)]
    z_h = [reference_logits(combine(weights, r[k]), 4, views[3]) for k in range(4)]
    np.testing.assert_allclose(
        outputs.total.numpy(), np_hwm_samples_total(z, z_h, labels), rtol=1e-5
    )
    np.testing.assert_allclose(
        outputs.hwm_ce.numpy(), np.mean([np_cross_entropy(labels, h) for h in z_h]), rtol=1e-5
    )


def test_one_hybrid_sample_is_okdph_with_dirichlet_draws(batch):
    _, labels, views = batch
    trained = []
    for objective, settings in (("okdph", None), ("okdph_multi_hwm", {"hybrid_samples": 1})):
        keras.utils.set_random_seed(7)
        model = OKDPH(
            lambda: tiny_student(),
            objective=objective,
            hybrid="dirichlet",
            seed=5,
            settings=settings,
        )
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        model.fit(views, labels, batch_size=8, epochs=1, verbose=0, shuffle=False)
        trained.append([w for s in model.students for w in s.get_weights()])
    for a, b in zip(*trained):
        np.testing.assert_array_equal(a, b)


def test_k_mean_hybrids_are_refused():
    with pytest.raises(ValueError, match=r"hybrid='mean' is not allowed; it must be 'dirichlet'"):
        OKDPH(
            lambda: tiny_student(),
            objective="okdph_multi_hwm",
            hybrid="mean",
            settings={"hybrid_samples": 3},
        )


def test_adaptive_fusion_measures_each_group_against_its_own_hwm(rng):
    model = groups_model((2, 2), identical_init=False)
    for student in model.students:
        randomize(student, rng)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    callback = okdph_keras.AdaptiveFusion(threshold=1e9)
    callback.set_model(model)
    callback.on_epoch_begin(0)
    logs = {}
    callback.on_epoch_end(0, logs)

    def distance(a, b):  # numpy: max_m ||theta_m - theta_h|| / ||theta_h|| within [a, b)
        flat = [
            np.concatenate([v.numpy().ravel() for v in s.trainable_variables])
            for s in model.students[a:b]
        ]
        hybrid_weights = np.mean(flat, axis=0)
        return max(np.linalg.norm(f - hybrid_weights) for f in flat) / np.linalg.norm(
            hybrid_weights
        )

    np.testing.assert_allclose(
        logs["fusion_signal"], max(distance(0, 2), distance(2, 4)), rtol=1e-5
    )
    assert logs["fused"] == 0


def groups_config(**overrides):
    values = dict(
        groups=(("resnet32", 2), ("small_cnn", 2)),
        views=("hflip", "cutout", "hflip", "cutout", "none", "randaugment"),
        method="okdph_groups",
    )
    values.update(overrides)
    return config.reference_config(
        "cifar10",
        values.pop("model", "small_cnn"),
        values.pop("views"),
        "cifar",
        32,
        ((0.5,) * 3, (0.25,) * 3),
        **values,
    )


def test_students_flag_reads_a_count_or_groups():
    assert config.parse_students("4") == (4, None)
    assert config.parse_students("resnet110:2, resnet32:1") == (
        None,
        (("resnet110", 2), ("resnet32", 1)),
    )
    for bad in ("two", "resnet32:0", "resnet32:2,:1", "resnet32"):
        with pytest.raises(ValueError, match="students=.* is not allowed; it must be a count"):
            config.parse_students(bad)
    with pytest.raises(ValueError, match="students=1 is not allowed; it must be an integer >= 2"):
        config.parse_students("1")


def test_a_groups_config_knows_its_students_and_the_small_architecture_alone():
    run = groups_config()
    assert run.num_students == 4
    assert run.run_name == "cifar10_small_cnn_okdph_groups_resnet32x2_small_cnnx2_seed42"
    assert run.student_architectures() == ["resnet32"] * 2 + ["small_cnn"] * 2
    alone = run.without_groups()
    assert (alone.groups, alone.model, alone.views) == (
        None,
        "small_cnn",
        ("hflip", "cutout", "none"),
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            dict(method="okdph"),
            r"method='okdph' is not allowed; it must be one of \['okdph_groups'\]",
        ),
        (
            dict(model="resnet110"),
            r"model \(the architecture exported\)='resnet110' is not allowed",
        ),
        (
            dict(views=("hflip",) * 5),
            r"it must be 6 views: one per student \(4\), then one per HWM \(2",
        ),
        (dict(groups=(("resnet32", 1), ("small_cnn", 1))), "at least one group of two or more"),
        (dict(groups=(("small_cnn", 2), ("small_cnn", 2))), "one group per architecture"),
        (dict(groups=(("resnet9", 2), ("small_cnn", 2))), r"group architecture='resnet9'"),
    ],
)
def test_bad_groups_configs_are_refused_clearly(overrides, message):
    with pytest.raises(ValueError, match=message):
        groups_config(**overrides)
