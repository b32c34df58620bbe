"""Multi-branch baselines' loss terms and layers, against independent numpy computations."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import log_softmax, np_cross_entropy, np_distillation

from okdph_keras.baselines import (
    FusionModule,
    OkddipAttention,
    OneGate,
    cl_ilr_terms,
    ema_update,
    ffl_terms,
    mean_teacher_terms,
    okddip_terms,
    one_terms,
    pcl_terms,
    rampup,
    scale_gradient,
)

B, C, T, W = 6, 5, 3.0, 0.7
LABELS = np.array([0, 1, 2, 3, 4, 1])
BN_EPSILON = 1e-5


# ------------------------------------------------------------ numpy references
def softmax(z):
    return np.exp(log_softmax(z))


def ce_grad(logits):
    """d CE / d logits."""
    return (softmax(logits) - np.eye(C)[LABELS]) / B


def kd_grad(teacher, student):
    """d tau^2 KL(p(teacher) || p(student)) / d student, the teacher held fixed."""
    return T * (softmax(student / T) - softmax(teacher / T)) / B


def branch_logits(count, seed=0, scale=2.0):
    rng = np.random.default_rng(seed)
    return [rng.normal(0.0, scale, (B, C)) for _ in range(count)]


def gradients(fn, tensors):
    """`fn(*variables)`, a persistent tape that recorded it, and the variables (from `tensors`)."""
    variables = [tf.Variable(t) for t in tensors]
    with tf.GradientTape(persistent=True) as tape:
        value = fn(*variables)
    return value, tape, variables


def finite_difference(fn, array, eps=1e-6):
    """Central differences of the scalar `fn(array)` with respect to every entry of `array`."""
    grad = np.zeros_like(array)
    for index in np.ndindex(array.shape):
        plus, minus = array.copy(), array.copy()
        plus[index] += eps
        minus[index] -= eps
        grad[index] = (fn(plus) - fn(minus)) / (2 * eps)
    return grad


def close(actual, expected, tol=1e-6):
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=tol, atol=tol)


# ------------------------------------------------------------ ramp-up, gradient scale, EMA
def test_rampup_matches_the_closed_form():
    assert float(rampup(0, 80)) == pytest.approx(0.0067, abs=5e-5)
    assert float(rampup(40, 80)) == pytest.approx(0.2865, abs=5e-5)
    assert float(rampup(80, 80)) == 1.0 and float(rampup(200, 80)) == 1.0
    epochs = np.arange(0, 12)
    expected = np.exp(-5.0 * (1.0 - np.minimum(epochs, 5) / 5.0) ** 2)
    close([float(rampup(tf.constant(e), 5)) for e in epochs], expected)
    assert float(rampup(0, 0)) == 1.0 and float(rampup(tf.constant(3), 0)) == 1.0
    with pytest.raises(
        ValueError, match=r"length=-1 is not allowed; it must be a finite number >= 0"
    ):
        rampup(0, -1)


def test_scale_gradient_is_identity_forward_and_scales_backward():
    x = tf.Variable([[1.0, -2.0, 3.0]])
    upstream = tf.constant([[0.5, 2.0, -1.0]])

    @tf.function
    def run(scale):
        with tf.GradientTape() as tape:
            y = scale_gradient(x, scale)
            loss = tf.reduce_sum(upstream * y)
        return y, tape.gradient(loss, x)

    y, grad = run(tf.constant(0.25))
    close(y, x.numpy(), 0)
    close(grad, 0.25 * upstream.numpy())
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(upstream * scale_gradient(x, 1.0 / 3.0))
    close(tape.gradient(loss, x), upstream.numpy() / 3.0)


def test_ema_update_matches_a_numpy_ema():
    rng = np.random.default_rng(1)
    start = [rng.normal(size=(3, 2)), rng.normal(size=(4,))]
    targets = [tf.Variable(v, dtype=tf.float32) for v in start]
    sources = [tf.Variable(tf.zeros_like(v)) for v in targets]
    expected = [v.astype(np.float32) for v in start]
    step = tf.Variable(0, dtype=tf.int64)
    update = tf.function(lambda: ema_update(targets, sources, step, 0.6))
    decays = []
    for s in range(5):
        values = [rng.normal(size=v.shape).astype(np.float32) for v in expected]
        for source, value in zip(sources, values):
            source.assign(value)
        decays.append(float(update()))
        a = min(1.0 - 1.0 / (s + 1), 0.6)
        expected = [a * e + (1 - a) * v for e, v in zip(expected, values)]
        for target, e in zip(targets, expected):
            close(target, e, 1e-6)
        if s == 0:  # a = 0: the target is a copy of the source
            close(targets[0], values[0], 0)
        step.assign_add(1)
    close(decays, [0.0, 0.5, 0.6, 0.6, 0.6])
    assert float(ema_update(targets, sources, 1000, 0.999)) == pytest.approx(0.999)
    with pytest.raises(ValueError, match=r"len\(source_variables\)=1 is not allowed"):
        ema_update(targets, sources[:1], 0, 0.99)
    with pytest.raises(ValueError, match=r"step=-1 is not allowed; it must be an integer >= 0"):
        ema_update(targets, sources, -1, 0.99)


# ------------------------------------------------------------ ONE and CL-ILR
def test_one_terms_and_its_detached_teacher():
    logits = branch_logits(2)
    gates = softmax(np.random.default_rng(2).normal(size=(B, 2)))
    teacher = gates[:, :1] * logits[0] + gates[:, 1:] * logits[1]
    terms, tape, variables = gradients(
        lambda g, z0, z1: one_terms([z0, z1], g, LABELS, temperature=T, weight=W),
        [gates, *logits],
    )
    close(terms["ce"], [np_cross_entropy(LABELS, z) for z in logits])
    close(terms["teacher_ce"], np_cross_entropy(LABELS, teacher))
    kd = [np_distillation(teacher, z, T) for z in logits]
    close(terms["kd"], kd)
    close(terms["total"], sum(terms["ce"]) + terms["teacher_ce"] + W * sum(kd))

    g, *z = variables
    assert tape.gradient(tf.add_n(terms["kd"]), g) is None  # the teacher is detached
    expected = np.stack([np.sum(ce_grad(teacher) * zi, axis=1) for zi in logits], axis=1)
    close(tape.gradient(terms["teacher_ce"], g), expected)  # the gate learns through CE(z_e)
    for i, zi in enumerate(logits):
        expected = ce_grad(zi) + gates[:, i : i + 1] * ce_grad(teacher) + W * kd_grad(teacher, zi)
        close(tape.gradient(terms["total"], z[i]), expected)


def test_cl_ilr_targets_are_the_other_branches_mean_without_gradient():
    logits = branch_logits(3, seed=3)
    terms, tape, variables = gradients(
        lambda *z: cl_ilr_terms(list(z), LABELS, temperature=T, weight=W), logits
    )
    targets = [sum(logits[j] for j in range(3) if j != i) / 2.0 for i in range(3)]
    close(terms["ce"], [np_cross_entropy(LABELS, z) for z in logits])
    kd = [np_distillation(t, z, T) for t, z in zip(targets, logits)]
    close(terms["kd"], kd)
    close(terms["total"], sum(terms["ce"]) + W * sum(kd))
    for i, z in enumerate(variables):
        expected = ce_grad(logits[i]) + W * kd_grad(targets[i], logits[i])
        close(tape.gradient(terms["total"], z), expected)


# ------------------------------------------------------------ OKDDip
def okddip_attention(features, query, key):
    energy = np.einsum("bid,bjd->bij", features @ query, features @ key)
    return softmax(energy)


def np_okddip_total(logits, attention):
    peers = np.stack(logits[:-1], axis=1)
    targets = list(np.einsum("bij,bjc->bic", attention, peers).transpose(1, 0, 2))
    targets.append(peers.mean(axis=1))
    kd = [np_distillation(t, z, T) for t, z in zip(targets, logits)]
    return sum(np_cross_entropy(LABELS, z) for z in logits) + W * sum(kd), kd


def test_okddip_terms_and_gradients_through_the_targets():
    logits = branch_logits(4, seed=4)
    attention = softmax(np.random.default_rng(5).normal(size=(B, 3, 3)))
    terms, tape, variables = gradients(
        lambda a, *z: okddip_terms(list(z), a, LABELS, temperature=T, weight=W),
        [attention, *logits],
    )
    total, kd = np_okddip_total(logits, attention)
    close(terms["kd"], kd)
    close(terms["ce"], [np_cross_entropy(LABELS, z) for z in logits])
    close(terms["total"], total)

    a, *z = variables
    grad_a = tape.gradient(terms["total"], a).numpy()
    assert np.abs(grad_a).max() > 1e-3  # nothing is detached: the attention learns
    close(grad_a, finite_difference(lambda x: np_okddip_total(logits, x)[0], attention), 1e-6)
    for i in (0, 3):  # a peer (also its peers' and the leader's target) and the leader

        def total_of(x, i=i):
            return np_okddip_total(logits[:i] + [x] + logits[i + 1 :], attention)[0]

        close(tape.gradient(terms["total"], z[i]), finite_difference(total_of, logits[i]), 1e-6)


def test_okddip_attention_layer_matches_numpy_and_learns_through_the_targets():
    layer = OkddipAttention()
    rng = np.random.default_rng(6)
    features = [rng.normal(size=(B, 64)).astype(np.float32) for _ in range(3)]
    attention = layer(features)
    assert attention.shape == (B, 3, 3) and layer.count_params() == 2 * 64 * 8
    query, key = layer.query.kernel.numpy(), layer.key.kernel.numpy()
    close(attention, okddip_attention(np.stack(features, axis=1), query, key), 1e-5)

    logits = [tf.constant(z, tf.float32) for z in branch_logits(4, seed=7)]
    with tf.GradientTape() as tape:
        terms = okddip_terms(logits, layer(features), LABELS, temperature=T, weight=W)
    for grad in tape.gradient(terms["total"], [layer.query.kernel, layer.key.kernel]):
        assert np.abs(grad.numpy()).max() > 1e-4


def test_okddip_refuses_a_single_peer():
    logits = [tf.zeros([B, C])] * 2
    message = r"len\(branch_logits\)=2 is not allowed; it must be an integer >= 3 \(OKDDip needs at least two peers"
    with pytest.raises(ValueError, match=message):
        okddip_terms(logits, tf.ones([B, 1, 1]), LABELS, temperature=T, weight=W)
    with pytest.raises(ValueError, match=r"the number of peers=1 is not allowed.*two peers plus"):
        OkddipAttention()([tf.zeros([B, 64])])


# ------------------------------------------------------------ FFL and PCL
def test_ffl_terms_with_detached_targets():
    *logits, fused = branch_logits(3, seed=8)
    terms, tape, variables = gradients(
        lambda f, *z: ffl_terms(list(z), f, LABELS, temperature=T, weight=W), [fused, *logits]
    )
    ensemble = (logits[0] + logits[1]) / 2.0
    kd = [np_distillation(fused, z, T) for z in logits]
    fused_kd = np_distillation(ensemble, fused, T)
    close(terms["ce"], [np_cross_entropy(LABELS, z) for z in logits])
    close(terms["fused_ce"], np_cross_entropy(LABELS, fused))
    close(terms["kd"], kd)
    close(terms["fused_kd"], fused_kd)
    expected = sum(terms["ce"]) + terms["fused_ce"] + W * (sum(kd) + fused_kd)
    close(terms["total"], expected)

    f, *z = variables
    close(tape.gradient(terms["total"], f), ce_grad(fused) + W * kd_grad(ensemble, fused))
    for zi, value in zip(z, logits):
        close(tape.gradient(terms["total"], zi), ce_grad(value) + W * kd_grad(fused, value))


def test_pcl_terms_against_numpy():
    *logits, ensemble = branch_logits(4, seed=9)
    mean = branch_logits(3, seed=10)
    terms, tape, variables = gradients(
        lambda en, *v: pcl_terms(
            list(v[:3]), en, LABELS, mean_logits=list(v[3:]), temperature=T, weight=W
        ),
        [ensemble, *logits, *mean],
    )
    kd = [np_distillation(ensemble, z, T) for z in logits]
    peer_kd = [
        sum(np_distillation(mean[j], z, T) for j in range(3) if j != b) / 2.0
        for b, z in enumerate(logits)
    ]
    close(terms["ce"], [np_cross_entropy(LABELS, z) for z in logits])
    close(terms["ensemble_ce"], np_cross_entropy(LABELS, ensemble))
    close(terms["kd"], kd)
    close(terms["peer_kd"], peer_kd)
    close(terms["total"], terms["ensemble_ce"] + sum(terms["ce"]) + W * (sum(kd) + sum(peer_kd)))

    en, *v = variables
    close(tape.gradient(terms["total"], en), ce_grad(ensemble))  # its KD target is detached
    assert all(tape.gradient(terms["total"], m) is None for m in v[3:])
    for b, zb in enumerate(v[:3]):
        peers = sum(kd_grad(mean[j], logits[b]) for j in range(3) if j != b) / 2.0
        expected = ce_grad(logits[b]) + W * (kd_grad(ensemble, logits[b]) + peers)
        close(tape.gradient(terms["total"], zb), expected)
    with pytest.raises(ValueError, match=r"len\(mean_logits\)=2 is not allowed; it must be 3"):
        pcl_terms(logits, ensemble, LABELS, mean_logits=mean[:2], temperature=T, weight=W)


# ------------------------------------------------------------ Mean Teacher
def test_mean_teacher_terms_with_a_detached_teacher():
    student, teacher = branch_logits(2, seed=11)
    terms, tape, variables = gradients(
        lambda s, t: mean_teacher_terms(s, t, LABELS, weight=W), [student, teacher]
    )
    p, q = softmax(student), softmax(teacher)
    consistency = np.sum((p - q) ** 2) / (B * C)
    close(terms["ce"], np_cross_entropy(LABELS, student))
    close(terms["consistency"], consistency)
    close(terms["total"], np_cross_entropy(LABELS, student) + W * consistency)

    s, t = variables
    assert tape.gradient(terms["total"], t) is None
    d = 2.0 * (p - q) / (B * C)  # d consistency / d p, then through the softmax
    expected = ce_grad(student) + W * (p * d - p * np.sum(p * d, axis=1, keepdims=True))
    close(tape.gradient(terms["total"], s), expected)


# ------------------------------------------------------------ checks and precision
def test_bad_arguments_are_refused():
    logits = [tf.zeros([B, C])] * 2
    with pytest.raises(
        ValueError, match=r"temperature=0.0 is not allowed; it must be a finite number > 0"
    ):
        cl_ilr_terms(logits, LABELS, temperature=0.0, weight=W)
    with pytest.raises(
        ValueError, match=r"weight=-1.0 is not allowed; it must be a finite number >= 0"
    ):
        ffl_terms(logits, logits[0], LABELS, temperature=T, weight=-1.0)
    with pytest.raises(
        ValueError, match=r"branch_logits='EagerTensor' is not allowed; it must be a list"
    ):
        one_terms(tf.zeros([B, C]), tf.ones([B, 2]), LABELS, temperature=T, weight=W)
    with pytest.raises(
        ValueError, match=r"len\(branch_logits\)=1 is not allowed; it must be an integer >= 2"
    ):
        one_terms(logits[:1], tf.ones([B, 1]), LABELS, temperature=T, weight=W)


def test_half_precision_logits_give_float32_terms():
    logits = [tf.constant(z, tf.float16) for z in branch_logits(2, seed=12)]
    gates = tf.fill([B, 2], tf.constant(0.5, tf.float16))
    terms = one_terms(logits, gates, LABELS, temperature=T, weight=tf.constant(W))
    assert terms["total"].dtype == tf.float32
    expected = one_terms(
        [tf.cast(z, tf.float32) for z in logits],
        tf.fill([B, 2], 0.5),
        LABELS,
        temperature=T,
        weight=W,
    )
    close(terms["total"], expected["total"].numpy(), 1e-6)


# ------------------------------------------------------------ layers
def randomize_batchnorm(layer, rng):
    for norm in (
        sub for sub in layer._flatten_layers() if isinstance(sub, keras.layers.BatchNormalization)
    ):
        size = norm.gamma.shape
        norm.gamma.assign(rng.uniform(0.5, 1.5, size))
        norm.beta.assign(rng.normal(0.0, 0.2, size))
        norm.moving_mean.assign(rng.normal(0.0, 0.2, size))
        norm.moving_variance.assign(rng.uniform(0.5, 2.0, size))


def np_batchnorm(x, norm):
    scale = norm.gamma.numpy() / np.sqrt(norm.moving_variance.numpy() + BN_EPSILON)
    return (x - norm.moving_mean.numpy()) * scale + norm.beta.numpy()


def test_one_gate_shapes_parameters_and_inference_output():
    gate = OneGate(3)
    rng = np.random.default_rng(13)
    features = rng.normal(size=(B, 16, 16, 32)).astype(np.float32)
    weights = gate(features, training=False)
    assert weights.shape == (B, 3)
    trainable = sum(int(np.prod(v.shape)) for v in gate.trainable_variables)
    assert trainable == 32 * 3 + 3 + 2 * 3 and gate.count_params() == trainable + 2 * 3
    randomize_batchnorm(gate, rng)
    x = features.mean(axis=(1, 2)) @ gate.dense.kernel.numpy() + gate.dense.bias.numpy()
    expected = softmax(np.maximum(np_batchnorm(x, gate.norm), 0.0))
    close(gate(features, training=False), expected, 1e-5)
    close(np.sum(weights, axis=1), np.ones(B), 1e-6)


def np_fusion(maps, fusion):
    x = np.concatenate(maps, axis=-1)
    kernel = fusion.depthwise.kernel.numpy()[..., 0]  # [3, 3, channels]
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    height, width = x.shape[1:3]
    x = sum(
        padded[:, i : i + height, j : j + width] * kernel[i, j] for i in range(3) for j in range(3)
    )
    x = np.maximum(np_batchnorm(x, fusion.depthwise_norm), 0.0)
    x = np.einsum("bhwc,cd->bhwd", x, fusion.pointwise.kernel.numpy()[0, 0])
    x = np.maximum(np_batchnorm(x, fusion.pointwise_norm), 0.0).mean(axis=(1, 2))
    return x @ fusion.classifier.kernel.numpy() + fusion.classifier.bias.numpy()


def test_fusion_module_shapes_parameters_and_inference_output():
    fusion = FusionModule(10)
    rng = np.random.default_rng(14)
    maps = [rng.normal(size=(2, 8, 8, 64)).astype(np.float32) for _ in range(2)]
    assert fusion(maps).shape == (2, 10)
    trainable = sum(int(np.prod(v.shape)) for v in fusion.trainable_variables)
    body = 3 * 3 * 128 + 2 * 128 + 128 * 64 + 2 * 64
    assert body == 9728 and trainable == body + 64 * 10 + 10
    assert fusion.count_params() == trainable + 2 * 128 + 2 * 64  # moving statistics
    randomize_batchnorm(fusion, rng)
    close(fusion(maps, training=False), np_fusion(maps, fusion), 1e-4)
    with pytest.raises(ValueError, match=r"the number of feature maps=1 is not allowed"):
        FusionModule(10)(maps[:1])


def test_layers_round_trip_through_config_and_keras_files(tmp_path):
    for layer in (OneGate(2), OkddipAttention(factor=4), FusionModule(7)):
        config = layer.get_config()
        assert type(layer).from_config(config).get_config() == config
        assert (
            keras.saving.get_registered_name(type(layer)) == f"okdph_keras>{type(layer).__name__}"
        )
    maps = [keras.Input((4, 4, 16)) for _ in range(3)]
    pooled = [keras.layers.GlobalAveragePooling2D()(x) for x in maps]
    outputs = [OneGate(3)(maps[0]), OkddipAttention(factor=4)(pooled), FusionModule(7)(maps)]
    model = keras.Model(maps, outputs)
    path = os.path.join(tmp_path, "branch_layers.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    data = [
        np.random.default_rng(k).normal(size=(2, 4, 4, 16)).astype(np.float32) for k in range(3)
    ]
    for before, after in zip(model(data), loaded(data)):
        close(after, before.numpy(), 0)
