"""The top eigenvalue of the loss Hessian by power iteration on Hessian-vector products."""

import dataclasses

import numpy as np
import tensorflow as tf

from okdph_keras import hybrid, losses
from okdph_keras.analysis import evaluation
from okdph_keras.validation import check_integer, check_number


@dataclasses.dataclass(frozen=True)
class HessianEigenvalue:
    """The result of `top_hessian_eigenvalue`.

    Attributes:
        eigenvalue: the estimate of the eigenvalue of largest magnitude.
        iterations: Hessian-vector products computed (one per iteration).
        converged: whether the relative tolerance was reached.
        examples: number of examples the loss averages over.
    """

    eigenvalue: float
    iterations: int
    converged: bool
    examples: int


def top_hessian_eigenvalue(
    model,
    data,
    iterations=100,
    tolerance=1e-3,
    seed=0,
    *,
    loss_fn=None,
    batch_size=evaluation.DEFAULT_BATCH_SIZE,
    verbose=False,
):
    """Top eigenvalue of the Hessian of the mean loss over `model`'s trainable weights.

    The loss is the example-weighted mean of `loss_fn` over the batches of
    `data`, read once and kept, with the network in inference mode (BatchNorm
    on its moving statistics), so it is a fixed, deterministic function of
    the trainable float weights. Power iteration from a seeded Gaussian unit
    vector: `lambda_k = v^T H v`, `v <- H v / ||H v||`, with `H v` computed by
    double backpropagation (the gradient of `g(theta) . v`). It stops when
    `|lambda_k - lambda_{k-1}| <= tolerance * |lambda_k|`. Power iteration
    finds the eigenvalue of largest magnitude: the top one whenever the
    Hessian's positive side dominates, as at a trained minimum.

    Args:
        model: a `keras.Model` mapping images to logits.
        data: a `tf.data.Dataset` of `(images, labels)` batches, or arrays;
            all of it is held in memory, so pass a few batches.
        iterations: at most this many iterations, >= 1.
        tolerance: relative tolerance, > 0.
        seed: integer seed of the start vector.
        loss_fn, batch_size: see `evaluate` (default: cross-entropy, 256 per batch of arrays).
        verbose: print one line per iteration.

    Returns:
        A `HessianEigenvalue`.

    Example:
        >>> top_hessian_eigenvalue(student, dataset.take(4), tolerance=1e-3).eigenvalue
    """
    iterations = check_integer("iterations", iterations, low=1)
    tolerance = check_number("tolerance", tolerance, low=0, low_open=True)
    seed = check_integer("seed", seed, low=0)
    batches = list(evaluation.as_batches(data, batch_size))
    shares = np.array([float(tf.shape(labels)[0]) for _, labels in batches])
    if shares.sum() == 0:
        raise ValueError("The data holds no examples.")
    examples = int(shares.sum())
    shares /= shares.sum()

    trainable, non_trainable = evaluation.model_values(model)
    floating = [k for k, value in enumerate(trainable) if hybrid.is_interpolable(value)]
    loss_fn = loss_fn or losses.cross_entropy

    @tf.function(reduce_retracing=True)
    def hessian_vector_product(weights, vector, images, labels):
        with tf.GradientTape() as outer:
            outer.watch(weights)
            with tf.GradientTape() as inner:
                inner.watch(weights)
                values = list(trainable)
                for k, weight in zip(floating, weights):
                    values[k] = weight
                logits, _ = model.stateless_call(values, non_trainable, images, training=False)
                loss = loss_fn(labels, logits)
            gradients = inner.gradient(
                loss, weights, unconnected_gradients=tf.UnconnectedGradients.ZERO
            )
            projection = tf.add_n(
                [tf.reduce_sum(g * tf.cast(v, g.dtype)) for g, v in zip(gradients, vector)]
            )
        return outer.gradient(
            projection, weights, unconnected_gradients=tf.UnconnectedGradients.ZERO
        )

    weights = [trainable[k] for k in floating]

    def product(vector):
        total = [np.zeros(v.shape) for v in vector]
        as_tensors = [tf.constant(v, w.dtype) for v, w in zip(vector, weights)]
        for share, (images, labels) in zip(shares, batches):
            for t, part in zip(total, hessian_vector_product(weights, as_tensors, images, labels)):
                t += share * part.numpy()
        return total

    rng = np.random.default_rng(seed)
    vector = _unit([rng.standard_normal(w.shape) for w in weights])
    previous = None
    for k in range(1, iterations + 1):
        image = product(vector)
        eigenvalue = float(sum(np.vdot(v, h) for v, h in zip(vector, image)))
        if verbose:
            print(f"Hessian power iteration {k}/{iterations}: eigenvalue {eigenvalue:.6g}")
        if previous is not None and abs(eigenvalue - previous) <= tolerance * abs(eigenvalue):
            return HessianEigenvalue(eigenvalue, k, True, examples)
        if not any(np.any(h) for h in image):  # H v = 0 for a random v: H = 0
            return HessianEigenvalue(0.0, k, True, examples)
        vector = _unit(image)
        previous = eigenvalue
    return HessianEigenvalue(eigenvalue, iterations, False, examples)


def _unit(vector):
    norm = np.sqrt(sum(np.sum(v**2) for v in vector))
    return [v / norm for v in vector]
