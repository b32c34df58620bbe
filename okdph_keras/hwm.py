"""The hybrid-weight model (HWM): its weights and logits, its state, a snapshot, fusion.

In the step the HWM's weights are `hybrid_values`, computed under the tape, and its
logits `network_logits`; the rest is what `OKDPH` does with it between steps.
"""

import keras
import numpy as np
import tensorflow as tf

from okdph_keras import distribute
from okdph_keras import hybrid as hybrid_lib


def hybrid_values(students, coefficients, hwm_gradient=True):
    """Trainable and non-trainable values of the HWM, sum_m r_m * theta_m.

    Args:
        students: list of M homogeneous `keras.Model`s.
        coefficients: tensor `[M]`, the convex weights r.
        hwm_gradient: if False the students' trainable values enter through
            `tf.stop_gradient`, so the HWM gives the students no gradient (the
            reference code's behaviour).

    Returns:
        `(trainable_values, non_trainable_values)` in `students[0]`'s order, ready
        for `students[0].stateless_call`. BatchNorm statistics are combined;
        integer state is taken from `students[0]` unchanged.
    """
    trainable = [list(s.trainable_variables) for s in students]
    if not hwm_gradient:
        trainable = [[tf.stop_gradient(v) for v in values] for values in trainable]
    non_trainable = [list(s.non_trainable_variables) for s in students]
    return (
        hybrid_lib.convex_combination(trainable, coefficients),
        hybrid_lib.convex_combination(non_trainable, coefficients),
    )


def network_logits(
    students, views, coefficients, *, hwm_gradient=True, training=True, hwm_state=None
):
    """Logits of the M students and of the HWM, each on its own view.

    Args:
        students: list of M homogeneous `keras.Model`s.
        views: list of M+1 image batches (students first, then the HWM).
        coefficients: tensor `[M]`, the hybridization weights r.
        hwm_gradient, training, hwm_state: see `hybrid_logits`.

    Returns:
        `(student_logits, hwm_logits)`: a list of M tensors and one tensor.
    """
    student_logits = [student(view, training=training) for student, view in zip(students, views)]
    hwm_logits = hybrid_logits(
        students,
        views[len(students)],
        coefficients,
        hwm_gradient=hwm_gradient,
        training=training,
        hwm_state=hwm_state,
    )
    return student_logits, hwm_logits


def hybrid_logits(
    students, images, coefficients, *, hwm_gradient=True, training=True, hwm_state=None
):
    """Logits of the HWM `sum_m r_m theta_m` of `students` on `images`.

    The HWM runs through `students[0].stateless_call` on the hybrid values, so no
    weights are copied and no student's state changes because of it.

    Args:
        students: list of M homogeneous `keras.Model`s.
        images: the HWM's image batch.
        coefficients: tensor `[M]`, the hybridization weights r.
        hwm_gradient: see `hybrid_values`.
        training: the network's mode.
        hwm_state: the HWM's own integer state (its dropout seeds), one
            variable per integer non-trainable variable of `students[0]`, in
            order; advanced in training, so the HWM draws its own masks. None:
            `students[0]`'s state is used and not advanced.

    Returns:
        A tensor `[B, num_classes]`.
    """
    trainable, non_trainable = hybrid_values(students, coefficients, hwm_gradient)
    positions = integer_positions(students[0])
    for position, state in zip(positions, hwm_state or ()):
        non_trainable[position] = tf.convert_to_tensor(state)
    logits, updated = students[0].stateless_call(
        trainable, non_trainable, images, training=training
    )
    if hwm_state and training:
        for position, state in zip(positions, hwm_state):
            state.assign(updated[position])
    return logits


def integer_positions(student):
    """Positions of the integer state (random seeds) in `student.non_trainable_variables`."""
    return [
        i
        for i, v in enumerate(student.non_trainable_variables)
        if not hybrid_lib.is_interpolable(v)
    ]


def initial_integer_state(student, seed):
    """Values of the HWM's own integer state: student 0's, with fresh seeds.

    Random layers' seed states get seeds derived from `seed`, so the HWM draws its
    own dropout masks, never a student's; other integer state starts as the
    student's.

    Args:
        student: student 0.
        seed: the model's integer seed.

    Returns:
        A list of `(name, numpy value)`, one per integer variable of the student
        (`integer_positions`), for the caller to hold as variables.
    """
    seeds = {id(v) for v in seed_states(student)}
    values = []
    for index, position in enumerate(integer_positions(student)):
        source = student.non_trainable_variables[position]
        value = source.numpy()
        if id(source) in seeds:
            value = np.zeros_like(value)
            value.flat[0] = np.random.default_rng([seed % 2**32, index]).integers(1, 2**31)
        values.append((f"hwm_integer_state_{index}", value))
    return values


def seed_states(model):
    """The state variables of every random layer's `SeedGenerator` in `model`."""
    states = []
    for layer in model._flatten_layers(include_self=True, recursive=True):
        states += [generator.state for generator in layer._seed_generators]
    return states


def snapshot(students, coefficients):
    """A new `keras.Model` of the students' architecture holding `sum_m r_m theta_m`."""
    model = keras.models.clone_model(students[0])
    trainable, non_trainable = hybrid_values(students, coefficients)
    for variable, value in zip(
        model.trainable_variables + model.non_trainable_variables, trainable + non_trainable
    ):
        variable.assign(value)
    return model


def fuse(students, coefficients, gamma, strategy):
    """`theta_m <- gamma * theta_h + (1 - gamma) * theta_m` for every student, in place.

    Every float variable is fused, BatchNorm statistics included, after the
    students' statistics (kept per replica by Keras) are averaged over every
    replica and worker of `strategy`; theta_h is computed once, before any
    student changes. Integer state is left as it is.
    """
    distribute.average_across_replicas(
        [v for s in students for v in s.non_trainable_variables if hybrid_lib.is_interpolable(v)],
        strategy,
    )
    hwm_values = hybrid_values(students, coefficients)
    weights = tf.stack([gamma, 1.0 - gamma])
    for student in students:
        for variables, hwm in zip(
            (student.trainable_variables, student.non_trainable_variables), hwm_values
        ):
            fused = hybrid_lib.convex_combination([hwm, variables], weights)
            for variable, value in zip(variables, fused):
                if hybrid_lib.is_interpolable(variable):
                    variable.assign(value)
