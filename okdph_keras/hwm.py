"""The hybrid-weight model (HWM) outside the training step: its state, a snapshot, fusion.

Inside the step the HWM is `step.hybrid_values` under the tape; these functions are
what `OKDPH` does with it between steps.
"""

import keras
import numpy as np
import tensorflow as tf

from okdph_keras import distribute, step
from okdph_keras import hybrid as hybrid_lib


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
        (`step.integer_positions`), for the caller to hold as variables.
    """
    seeds = {id(v) for v in seed_states(student)}
    values = []
    for index, position in enumerate(step.integer_positions(student)):
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
    trainable, non_trainable = step.hybrid_values(students, coefficients)
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
    hwm_values = step.hybrid_values(students, coefficients)
    weights = tf.stack([gamma, 1.0 - gamma])
    for student in students:
        for variables, hwm in zip(
            (student.trainable_variables, student.non_trainable_variables), hwm_values
        ):
            fused = hybrid_lib.convex_combination([hwm, variables], weights)
            for variable, value in zip(variables, fused):
                if hybrid_lib.is_interpolable(variable):
                    variable.assign(value)
