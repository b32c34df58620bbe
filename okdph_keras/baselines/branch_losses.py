"""Loss terms of the multi-branch online-distillation baselines and Mean Teacher.

ONE, CL-ILR, OKDDip, FFL and PCL (a shared trunk, a last stage and classifier per
branch) and Mean Teacher, as `docs/BASELINES.md` section 2 specifies them with the
decisions of its section 5. Each `*_terms` function takes logits (and the method's
extra tensors) and returns a dict of scalar tensors: `"ce"` and `"kd"` are lists
with one entry per branch, the distillation terms unweighted (`tau^2 * KL`,
"batchmean", see `losses.distillation_loss`); `"total"` is the loss to
differentiate, with the distillation terms times `weight`. The caller computes
`weight` (e.g. `alpha * rampup(epoch, 80)`), so a number or a scalar tensor.

The reference code adds 1e-7 to the target probabilities inside its KL terms, a
guard against `log(0)` with probabilities; the log-softmax here needs no guard,
so it is left out. Per example it changes the value by about
`1e-7 * tau^2 * sum_c (log p_c - log q_c)` and the gradient with respect to the
student's logits by `1e-7 * tau * (C q - 1)`: negligible.

The modules these methods add (gate, attention, fusion) are in `branch_layers`.
"""

import tensorflow as tf

from okdph_keras.losses import cross_entropy, distillation_loss, full_precision
from okdph_keras.models.layers import scale_gradient  # noqa: F401  (CL-ILR's; tested here)
from okdph_keras.validation import check_integer, check_number, fail, is_number

OKDDIP_PEERS = (
    "OKDDip needs at least two peers plus the leader; with one peer its attention is "
    "the constant 1 and the method degenerates"
)


def rampup(epoch, length):
    """The ramp-up `r(e; L) = exp(-5 (1 - min(e, L) / L)^2)`, 1 when `L = 0`.

    `L = 0` means no ramp-up: `r = 1` at every epoch (the limit of `r(e; L)` as
    `L -> 0` for every `e > 0`). Epochs below 0 count as 0.

    Args:
        epoch: the 0-based epoch `e`, a number or a tensor.
        length: the ramp-up length `L` in epochs, a number >= 0.

    Returns:
        A float32 scalar tensor: 0.0067 at `e = 0`, 0.2865 at `L / 2`, 1 from `L` on.

    Example:
        >>> round(float(rampup(40, 80)), 4)
        0.2865
    """
    length = check_number("length", length, low=0)
    if is_number(epoch):
        check_number("epoch", epoch)
    if length == 0:
        return tf.constant(1.0)
    progress = tf.clip_by_value(tf.cast(epoch, tf.float32), 0.0, length) / length
    return tf.exp(-5.0 * tf.square(1.0 - progress))


def ema_update(target_variables, source_variables, step, max_decay):
    """`target <- a target + (1 - a) source` with `a = min(1 - 1/(s+1), max_decay)`.

    The temporal mean of PCL (`max_decay` 0.999) and Mean Teacher (0.99). Only the
    given variables are averaged: pass the trainable ones to keep the target's own
    BatchNorm statistics. `s = 0` copies the source (`a = 0`). With
    `optimizer.iterations` read after `apply_gradients`, `s` counts the steps
    taken, this one included, and the first update has `a = 1/2`.

    Args:
        target_variables: the variables updated, e.g. the mean model's.
        source_variables: the variables averaged in, in the same order and shapes.
        step: the global step `s`, an integer >= 0 or an integer tensor.
        max_decay: the largest decay, in [0, 1].

    Returns:
        The decay `a` used, a float32 scalar tensor.

    Example:
        >>> ema_update(teacher.trainable_variables, student.trainable_variables,
        ...            optimizer.iterations, 0.99)
    """
    max_decay = check_number("max_decay", max_decay, low=0, high=1)
    targets, sources = list(target_variables), list(source_variables)
    if len(targets) != len(sources):
        fail("len(source_variables)", len(sources), f"{len(targets)}, as target_variables")
    for target, source in zip(targets, sources):
        if tuple(target.shape) != tuple(source.shape):
            fail(f"the shape of {source.name}", tuple(source.shape), f"{tuple(target.shape)}")
    if is_number(step):
        check_integer("step", step, low=0)
    decay = tf.minimum(1.0 - 1.0 / (tf.cast(step, tf.float32) + 1.0), max_decay)
    for target, source in zip(targets, sources):
        a = tf.cast(decay, target.dtype)
        target.assign(a * target + (1.0 - a) * tf.cast(source, target.dtype))
    return decay


def one_terms(branch_logits, gate_weights, labels, *, temperature, weight):
    """ONE: `sum_i CE(z_i) + CE(z_e) + weight * sum_i tau^2 KL(p(sg(z_e)) || p(z_i))`.

    The gated teacher `z_e = sum_i g_i z_i` is detached in the KD term, as the
    authors' code does, so the gate learns through `CE(z_e)` only.

    Args:
        branch_logits: a list of m >= 2 tensors `[B, C]`.
        gate_weights: `[B, m]`, the `OneGate` output.
        labels: integer classes `[B]`.
        temperature: tau > 0 (the reference: 3).
        weight: the KD weight, `alpha * rampup(epoch, 80)` in the reference.

    Returns:
        A dict: `ce`, `kd` (lists over branches), `teacher_ce`, `total`.

    Example:
        >>> terms = one_terms(logits, gate(shared), y, temperature=3.0, weight=r)
    """
    logits = _branches(branch_logits, minimum=2)
    gates = full_precision(gate_weights)
    teacher = tf.einsum("bm,mbc->bc", tf.cast(gates, logits[0].dtype), tf.stack(logits))
    kd = _distil([tf.stop_gradient(teacher)] * len(logits), logits, temperature)
    ce = [cross_entropy(labels, z) for z in logits]
    teacher_ce = cross_entropy(labels, teacher)
    total = tf.add_n(ce) + teacher_ce + _weighted(weight, kd)
    return {"ce": ce, "kd": kd, "teacher_ce": teacher_ce, "total": total}


def cl_ilr_terms(branch_logits, labels, *, temperature, weight):
    """CL-ILR: `sum_i CE(z_i) + weight * sum_i tau^2 KL(p(t_i) || p(z_i))`, no gate.

    Branch i's target `t_i` is the mean logits of the other branches, detached.
    The trunk's gradient is scaled by 1/m at the split with `scale_gradient`.

    Args:
        branch_logits: a list of m >= 2 tensors `[B, C]`.
        labels: integer classes `[B]`.
        temperature: tau > 0.
        weight: the KD weight.

    Returns:
        A dict: `ce`, `kd` (lists over branches), `total`.

    Example:
        >>> terms = cl_ilr_terms(logits, y, temperature=3.0, weight=r)
    """
    logits = _branches(branch_logits, minimum=2)
    targets = [
        _mean([tf.stop_gradient(y) for j, y in enumerate(logits) if j != i])
        for i in range(len(logits))
    ]
    kd = _distil(targets, logits, temperature)
    ce = [cross_entropy(labels, z) for z in logits]
    return {"ce": ce, "kd": kd, "total": tf.add_n(ce) + _weighted(weight, kd)}


def okddip_terms(branch_logits, attention, labels, *, temperature, weight):
    """OKDDip: peers distil from attention-weighted peer logits, the leader from their mean.

    Branches `0 .. m-2` are peers, branch `m-1` the leader. Peer i's target is
    `t_i = sum_j a_ij z_j`; the leader's is the peers' mean logits. Nothing is
    detached, as in the reference and the authors' code: `W_q`, `W_k` learn only
    through the targets, and the targets pass gradient into the peers.
    `total = sum_i CE(z_i) + weight * sum_i kd_i` over all m branches.

    Args:
        branch_logits: a list of m >= 3 tensors `[B, C]` (two peers at least).
        attention: `[B, m-1, m-1]`, the `OkddipAttention` output.
        labels: integer classes `[B]`.
        temperature: tau > 0 (the reference: 3).
        weight: the KD weight, `alpha * rampup(epoch, 80)` in the reference.

    Returns:
        A dict: `ce`, `kd` (lists over branches, the leader last), `total`.

    Example:
        >>> terms = okddip_terms(logits, attend(features[:-1]), y, temperature=3.0, weight=r)
    """
    logits = _branches(branch_logits, minimum=3, reason=OKDDIP_PEERS)
    peers = tf.stack(logits[:-1], axis=1)
    targets = tf.einsum("bij,bjc->bic", tf.cast(full_precision(attention), peers.dtype), peers)
    targets = tf.unstack(targets, axis=1) + [tf.reduce_mean(peers, axis=1)]
    kd = _distil(targets, logits, temperature)
    ce = [cross_entropy(labels, z) for z in logits]
    return {"ce": ce, "kd": kd, "total": tf.add_n(ce) + _weighted(weight, kd)}


def ffl_terms(branch_logits, fused_logits, labels, *, temperature, weight):
    """FFL: branches distil from the fused classifier, the fused one from the branches' mean.

    `total = sum_b CE(z_b) + CE(z_f) + weight * (sum_b tau^2 KL(p(sg z_f) || p(z_b))
    + tau^2 KL(p(sg mean_b z_b) || p(z_f)))`: every target is detached.

    Args:
        branch_logits: a list of m >= 2 tensors `[B, C]`.
        fused_logits: `[B, C]`, the `FusionModule` output.
        labels: integer classes `[B]`.
        temperature: tau > 0 (the reference: 3).
        weight: the KD weight, `rampup(epoch, 80)` in the reference.

    Returns:
        A dict: `ce`, `kd` (lists over branches), `fused_ce`, `fused_kd`, `total`.

    Example:
        >>> terms = ffl_terms(logits, fusion(maps), y, temperature=3.0, weight=r)
    """
    logits = _branches(branch_logits, minimum=2)
    fused = full_precision(fused_logits)
    kd = _distil([tf.stop_gradient(fused)] * len(logits), logits, temperature)
    [fused_kd] = _distil([tf.stop_gradient(_mean(logits))], [fused], temperature)
    ce = [cross_entropy(labels, z) for z in logits]
    fused_ce = cross_entropy(labels, fused)
    total = tf.add_n(ce) + fused_ce + _weighted(weight, kd + [fused_kd])
    return {"ce": ce, "kd": kd, "fused_ce": fused_ce, "fused_kd": fused_kd, "total": total}


def pcl_terms(branch_logits, ensemble_logits, labels, *, mean_logits, temperature, weight):
    """PCL: `CE(z_en) + sum_b [CE(z_b) + weight (kd_b + peer_kd_b)]`.

    `kd_b = tau^2 KL(p(sg z_en) || p(z_b))` distils the peer ensemble (`en_fc`) into
    branch b; `peer_kd_b = 1/(m-1) sum_{j != b} tau^2 KL(p(sg z~_j) || p(z_b))` the
    temporal-mean model's other branches. Update the mean model with `ema_update`.

    Args:
        branch_logits: a list of m >= 2 tensors `[B, C]`, branch b on view b.
        ensemble_logits: `[B, C]`, `en_fc` on the concatenated pooled features.
        labels: integer classes `[B]`.
        mean_logits: the mean model's m branch logits on the same views.
        temperature: tau > 0 (the reference: 3).
        weight: the KD weight, `rampup(epoch, 80)`.

    Returns:
        A dict: `ce`, `kd`, `peer_kd` (lists over branches), `ensemble_ce`, `total`.

    Example:
        >>> terms = pcl_terms(logits, en_logits, y, mean_logits=mean_model_logits,
        ...                   temperature=3.0, weight=rampup(epoch, 80))
    """
    logits = _branches(branch_logits, minimum=2)
    mean = [tf.stop_gradient(z) for z in _tensors("mean_logits", mean_logits)]
    if len(mean) != len(logits):
        fail("len(mean_logits)", len(mean), f"{len(logits)}, as len(branch_logits)")
    ensemble = full_precision(ensemble_logits)
    kd = _distil([tf.stop_gradient(ensemble)] * len(logits), logits, temperature)
    peer_kd = [
        _mean(
            _distil([y for j, y in enumerate(mean) if j != b], [z] * (len(mean) - 1), temperature)
        )
        for b, z in enumerate(logits)
    ]
    ce = [cross_entropy(labels, z) for z in logits]
    ensemble_ce = cross_entropy(labels, ensemble)
    total = ensemble_ce + tf.add_n(ce) + _weighted(weight, kd + peer_kd)
    return {"ce": ce, "kd": kd, "peer_kd": peer_kd, "ensemble_ce": ensemble_ce, "total": total}


def mean_teacher_terms(student_logits, teacher_logits, labels, *, weight):
    """Mean Teacher: `CE(z_s) + weight * mean_{b,c} (softmax(z_s) - softmax(sg z_t))^2`.

    Args:
        student_logits: `[B, C]`, on view 0.
        teacher_logits: `[B, C]`, the EMA teacher on view 1 (detached here).
        labels: integer classes `[B]`.
        weight: the consistency weight, `10 * rampup(epoch, 5)` in the reference.

    Returns:
        A dict: `ce`, `consistency`, `total`.

    Example:
        >>> terms = mean_teacher_terms(student(x0), teacher(x1), y, weight=10 * rampup(e, 5))
    """
    student = full_precision(student_logits)
    consistency = softmax_mse(student, teacher_logits)
    ce = cross_entropy(labels, student)
    return {"ce": ce, "consistency": consistency, "total": ce + _weighted(weight, [consistency])}


def softmax_mse(student_logits, teacher_logits):
    """Mean Teacher's consistency `mean_{b,c} (softmax(z_s) - softmax(sg z_t))^2`.

    Args:
        student_logits: `[B, C]`.
        teacher_logits: `[B, C]`, detached here.

    Returns:
        A float32 scalar tensor.

    Example:
        >>> consistency = softmax_mse(student(x0), teacher(x1))
    """
    student = full_precision(student_logits)
    teacher = tf.stop_gradient(tf.cast(full_precision(teacher_logits), student.dtype))
    return tf.reduce_mean(tf.square(tf.nn.softmax(student) - tf.nn.softmax(teacher)))


def _tensors(name, values):
    """`values` as a list of full-precision tensors."""
    if not isinstance(values, (list, tuple)):
        fail(name, type(values).__name__, "a list of [B, C] logits tensors, one per branch")
    return [full_precision(z) for z in values]


def _branches(branch_logits, *, minimum, reason="distillation between branches needs two"):
    """The branch logits as a list of full-precision tensors, at least `minimum` of them."""
    logits = _tensors("branch_logits", branch_logits)
    if len(logits) < minimum:
        fail("len(branch_logits)", len(logits), f"an integer >= {minimum} ({reason})")
    return logits


def _mean(tensors):
    return tf.add_n(tensors) / float(len(tensors))


def _distil(targets, logits, temperature):
    """`tau^2 KL(p(target) || p(z))` for each pair."""
    check_number("temperature", temperature, low=0, low_open=True)
    return [distillation_loss(t, z, temperature) for t, z in zip(targets, logits)]


def _weighted(weight, terms):
    """`weight * sum(terms)`; a tensor weight is not checked."""
    if is_number(weight):
        check_number("weight", weight, low=0)
    total = tf.add_n(terms)
    return tf.cast(weight, total.dtype) * total
