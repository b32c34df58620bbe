"""The method registry: every method is one object, found by name, and a new one plugs in."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import np_cross_entropy, np_distillation, randomize, tiny_student

from okdph_keras import OKDPH, baselines, callbacks, compare, losses, methods, step, train
from okdph_keras.config import Config
from okdph_keras.data import from_arrays


def test_one_list_of_names_and_each_method_answers_for_itself():
    # (This module registers one more method, after the library's own.)
    assert methods.run_names()[:7] == ("okdph", "independent", "dml", "kdcl", "sam", "swa", "ema")
    assert methods.names(trainable_by_model=True)[:4] == ("okdph", "independent", "dml", "kdcl")
    assert set(methods.PAPER) <= set(methods.run_names())
    own = methods.names()[:20]  # the library's; other tests and the README register more
    assert [n for n in own if methods.get(n).uses_hwm] == [
        "okdph",
        "okdph_groups",
        "okdph_multi_hwm",
        "okdph_adaptive",
        "okdph_no_hwm_loss",
        "okdph_no_fusion",
        "okdph_dirichlet",
        "okdph_reference",
    ]
    assert [n for n in own if methods.get(n).averages_weights] == ["swa", "ema"]
    with pytest.raises(ValueError, match=r"method='two' is not allowed; it must be one of \("):
        methods.get("two")
    with pytest.raises(ValueError, match="already registered"):
        methods.register(methods.Method("dml"))


def config(method, **overrides):
    """A resolved `Config` (the method's settings filled in)."""
    return unresolved_config(method, **overrides).resolved()


def unresolved_config(method, **overrides):
    values = dict(
        dataset="cifar10",
        model="small_cnn",
        views=("hflip", "cutout", "none"),
        style="cifar",
        image_size=8,
        normalization=((0.5,) * 3, (0.25,) * 3),
        epochs=8,
        method=method,
        run_name="r",
    )
    return Config(**{**values, **overrides})


def test_each_run_method_brings_its_callbacks_optimizer_and_gradients(tmp_path):
    bn_data = tf.data.Dataset.from_tensors(tf.zeros([2, 8, 8, 3]))
    hooks = dict(run_dir=str(tmp_path), bn_data=bn_data, chief=True)
    fusion = methods.get("okdph").callbacks(config("okdph", fusion_gamma=0.3), **hooks)
    assert [type(c) for c in fusion] == [callbacks.Fusion] and fusion[0].gamma == 0.3
    assert methods.get("okdph").callbacks(config("okdph", fusion_gamma=0.0), **hooks) == []
    (swa,) = methods.get("swa").callbacks(config("swa", swa_start=0.75), **hooks)
    assert isinstance(swa, baselines.SWA) and swa.start_epoch == 6
    (ema_bn,) = methods.get("ema").callbacks(config("ema"), **hooks)
    assert isinstance(ema_bn, baselines.EMABatchNorm)
    sgd = keras.optimizers.SGD(0.1)
    ema = methods.get("ema").wrap_optimizer(sgd, config("ema", ema_momentum=0.9))
    assert ema.use_ema and ema.ema_momentum == 0.9
    assert methods.get("dml").wrap_optimizer(sgd, config("dml")) is sgd
    assert methods.get("sam").sharpness(config("sam", sam_rho=0.2)) == {
        "rho": 0.2,
        "adaptive": True,
    }
    for name in ("okdph", "dml", "swa", "ema"):
        assert methods.get(name).sharpness(config(name)) is None
    model = train.build_model(config("sam", sam_rho=0.2), _Source())
    assert model.objective == "sam" and model.sam_rho == 0.2
    assert train.build_model(config("kdcl"), _Source()).objective == "kdcl"


class _Source:
    image_shape = (8, 8, 3)
    num_classes = 10


class HybridTeacher(methods.HybridDistillation):
    """OKDPH whose distillation target is the HWM alone (the README's example method)."""

    def distillation_terms(self, outputs, settings):
        teacher = tf.stop_gradient(outputs["hwm"])
        tau = settings["temperature"]
        return [losses.distillation_loss(teacher, z, tau) for z in outputs["students"]]


methods.register(HybridTeacher("test_hwm_teacher"))


def test_each_method_holds_its_defaults_and_unset_fields_take_them(tmp_path):
    # Expected values: METHOD.md's reference table and the paper's defaults, written out.
    table = config("okdph", dataset="cifar100", model="resnet32")
    assert (table.omega, table.beta, table.fusion_gamma, table.fusion_every) == (1.0, 0.5, 1.0, 5)
    assert (table.fusion_unit, table.temperature, table.hybrid) == ("batch", 4.0, "mean")
    paper = config("okdph")  # small_cnn is not in the table
    assert (paper.omega, paper.beta, paper.fusion_gamma, paper.fusion_every) == (0.8, 0.8, 0.5, 1)
    assert paper.sam_rho is None and paper.swa_start is None  # not OKDPH's
    dml = config("dml", dataset="cifar100", model="resnet32")
    assert (dml.beta, dml.temperature, dml.omega, dml.fusion_gamma) == (1.0, 1.0, None, None)
    assert config("dml", beta=0.3, omega=0.6).beta == 0.3  # a value the user sets wins
    assert (config("sam").sam_rho, config("sam").sam_adaptive) == (0.05, True)
    assert config("swa").swa_start == 0.8 and config("ema").ema_momentum == 0.999
    with pytest.raises(
        ValueError, match=r"omega=1.5 is not allowed; it must be a number in \[0, 1\]"
    ):
        config("dml", omega=1.5)  # checked even where the method does not use it

    # compare resolves each method from the base's unset fields, not OKDPH's values.
    base = unresolved_config("okdph", dataset="cifar100", model="resnet32")
    dml_run = compare.method_config(base, "dml", 1, str(tmp_path))
    assert (dml_run.beta, dml_run.omega) == (1.0, None)
    okdph_run = compare.method_config(base, "okdph", 1, str(tmp_path))
    assert (okdph_run.beta, okdph_run.omega) == (0.5, 1.0)

    # OKDPH's own arguments: None is the objective's default.
    assert (OKDPH(tiny_student).omega, OKDPH(tiny_student).temperature) == (0.8, 4.0)
    dml_model = OKDPH(tiny_student, objective="dml")
    assert (dml_model.omega, dml_model.beta, dml_model.hybrid) == (None, 1.0, "mean")


def test_a_registered_method_trains_inside_okdph_with_its_own_losses(rng, batch):
    images, labels, _ = batch
    students = [tiny_student() for _ in range(2)]
    for student in students:
        randomize(student, rng)
    model = OKDPH(students, identical_init=False, objective="test_hwm_teacher", seed=0)
    outputs = step.forward(
        students,
        [images] * 3,
        labels,
        tf.constant([0.5, 0.5]),
        omega=0.8,
        beta=0.8,
        temperature=4.0,
        objective="test_hwm_teacher",
        training=False,
    )
    z = [s(images, training=False).numpy().astype(np.float64) for s in students]
    z_h = model(images)[:, 2].numpy().astype(np.float64)
    ce = [np_cross_entropy(labels, zm) for zm in z]
    kd = [np_distillation(z_h, zm, 4.0) for zm in z]
    expected = 0.8 * sum(ce) + 2 * 0.2 * np_cross_entropy(labels, z_h) + 0.8 * sum(kd)
    np.testing.assert_allclose(outputs.kd, kd, rtol=1e-4)
    np.testing.assert_allclose(float(outputs.total), expected, rtol=1e-4)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    logs = model.fit([images] * 3, labels, batch_size=len(labels), epochs=1, verbose=0)
    assert np.isfinite(logs.history["hwm_ce"][0])


def test_baselines_default_to_the_reference_codes_settings():
    # The values of BASELINES.md, written out: 2.1 DML (weight 1, T = 1), 2.3 KDCL
    # (alpha = 0.5: CE weight 0.5, KD weight 0.5, T = 4), 2.8 SWA (averaging after epochs
    # 240..299 of 300, swa_lr 0.001), 2.9 SAM (ASAM, rho 0.05, label smoothing 0.1).
    dml = config("dml")
    assert (dml.beta, dml.temperature) == (1.0, 1.0)
    kdcl = config("kdcl")
    assert (kdcl.omega, kdcl.beta, kdcl.temperature) == (0.5, 0.5, 4.0)
    sam = config("sam")
    assert (sam.sam_rho, sam.sam_adaptive, sam.label_smoothing) == (0.05, True, 0.1)
    swa = config("swa", epochs=300)
    assert (swa.swa_start, swa.swa_lr) == (0.8, 0.001)
    hooks = dict(run_dir="unused", bn_data=None, chief=False)
    (callback,) = methods.get("swa").callbacks(swa, **hooks)
    assert callback.start_epoch == 240
    schedule = methods.get("swa").learning_rate_schedule(swa, 391)
    assert isinstance(schedule, baselines.swa.SWALearningRate)
    assert (schedule.start_epoch, schedule.swa_learning_rate) == (240, 0.001)
    assert float(schedule(217 * 391)) == pytest.approx(0.001)
    for name in ("okdph", "dml", "kdcl", "sam"):  # label smoothing is SAM's alone
        assert config(name).label_smoothing == (0.1 if name == "sam" else None)
    with pytest.raises(
        ValueError, match=r"label_smoothing=1.0 is not allowed; it must be a number in \[0, 1\)"
    ):
        config("sam", label_smoothing=1.0)
    with pytest.raises(
        ValueError, match=r"swa_lr=0.0 is not allowed; it must be a finite number > 0"
    ):
        config("swa", swa_lr=0.0)


FIXED_LOGITS = [
    np.array([[2.0, -1.0, 0.5], [0.0, 1.0, -2.0]]),
    np.array([[1.0, 0.0, -0.5], [-1.0, 2.0, 0.0]]),
]
FIXED_LABELS = np.array([0, 1])


def np_kl(teacher, student, tau):
    """tau^2 * batchmean KL(p^tau(teacher) || p^tau(student)), written out."""
    p = np.exp(teacher / tau) / np.exp(teacher / tau).sum(axis=1, keepdims=True)
    q = np.exp(student / tau) / np.exp(student / tau).sum(axis=1, keepdims=True)
    return tau**2 * np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1))


def method_total(name):
    """A method's total on the fixed logits, at its default settings."""
    method, settings = methods.get(name), config(name)
    logits = [tf.constant(z, tf.float64) for z in FIXED_LOGITS]
    ce = [method.cross_entropy(FIXED_LABELS, z, {}) for z in logits]
    values = method.settings({"omega": settings.omega, "beta": settings.beta})
    values["temperature"] = settings.temperature
    kd = method.distillation_terms({"students": logits, "hwm": None}, values)
    total = method.total_loss(student_ce=ce, hwm_ce=None, kd=kd, settings=values, epoch=None)
    return float(total)


def test_dml_total_at_its_defaults_matches_numpy():
    # L_k = CE(z_k) + KL(softmax(z_l) || softmax(z_k)), l the other peer, T = 1.
    z0, z1 = FIXED_LOGITS
    ce = [np_cross_entropy(FIXED_LABELS, z) for z in FIXED_LOGITS]
    expected = ce[0] + np_kl(z1, z0, 1.0) + ce[1] + np_kl(z0, z1, 1.0)
    assert method_total("dml") == pytest.approx(expected, rel=1e-12)


def test_kdcl_total_at_its_defaults_matches_numpy():
    # L_k = 0.5 CE(z_k) + 0.5 * 4^2 KL(p^4(mean_k z_k) || p^4(z_k)).
    teacher = np.mean(FIXED_LOGITS, axis=0)
    expected = sum(
        0.5 * np_cross_entropy(FIXED_LABELS, z) + 0.5 * np_kl(teacher, z, 4.0) for z in FIXED_LOGITS
    )
    assert method_total("kdcl") == pytest.approx(expected, rel=1e-12)


def test_a_set_label_smoothing_reaches_the_step():
    train_source = from_arrays(np.zeros((2, 8, 8, 3), np.uint8), [0, 1])
    default = train.build_model(config("sam"), train_source)
    assert default.label_smoothing == 0.1 and default._loss_options()["label_smoothing"] == 0.1
    model = train.build_model(config("sam", label_smoothing=0.3), train_source)
    assert model.label_smoothing == 0.3 and model._loss_options()["label_smoothing"] == 0.3
    assert OKDPH.from_config(model.get_config()).label_smoothing == 0.3


def test_every_other_method_keeps_the_step_schedule():
    schedule = methods.get("dml").learning_rate_schedule(config("dml", epochs=8), 10)
    assert isinstance(schedule, keras.optimizers.schedules.PiecewiseConstantDecay)
    # Epochs 0-3 at 0.1, 4-5 at 0.01, 6-7 at 0.001: the first step of epoch 4 is step 40.
    lrs = [float(schedule(step)) for step in (0, 39, 40, 59, 60, 79)]
    np.testing.assert_allclose(lrs, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)
