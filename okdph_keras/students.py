"""What `OKDPH` is given, checked: its students, the views of a batch, the labels.

Every message names the bad value and what is allowed; nothing here trains.
"""

import itertools

import keras
import tensorflow as tf

from okdph_keras import labels as labels_lib
from okdph_keras import validation


def make_students(students, num_students):
    """The list of M >= 2 built, distinct, homogeneous students `OKDPH` was given.

    Args:
        students: a builder (a callable returning a fresh built model) or a list.
        num_students: M for a builder (default 2); with a list, None or its length.
    """
    if isinstance(students, keras.Model):
        raise ValueError(
            "OKDPH needs M students: pass a builder (a function returning a fresh "
            "model) with num_students, or a list of models; got a single model."
        )
    if isinstance(students, (list, tuple)):
        students = list(students)
        if num_students is not None and num_students != len(students):
            raise ValueError(
                f"num_students={num_students!r} does not match the {len(students)} students given."
            )
    elif callable(students):
        num_students = 2 if num_students is None else num_students
        num_students = validation.check_integer("num_students", num_students, low=2)
        students = [students() for _ in range(num_students)]
    else:
        raise ValueError(
            "students must be a builder (a callable returning a keras.Model) or a "
            f"list of keras.Model; got {type(students).__name__}."
        )
    if len(students) < 2:
        raise ValueError(f"OKDPH needs at least 2 students; got {len(students)}.")
    _check_built(students, first=0)
    if len({id(s) for s in students}) != len(students):
        raise ValueError("The same model object appears twice among the students.")
    _check_homogeneous(students)
    return students


def _check_homogeneous(students):
    """Fails naming the first variable in which a student differs from student 0."""
    reference = students[0]
    for m, student in enumerate(students[1:], start=1):
        for kind in ("trainable_variables", "non_trainable_variables"):
            pairs = itertools.zip_longest(getattr(reference, kind), getattr(student, kind))
            for index, (ref, var) in enumerate(pairs):
                if ref is None or var is None or ref.shape != var.shape or ref.dtype != var.dtype:
                    raise ValueError(
                        "OKDPH students must be homogeneous (same variables, shapes and "
                        f"dtypes in the same order). {kind}[{index}] differs: student 0 "
                        f"has {_describe(ref)}, student {m} has {_describe(var)}."
                    )


def _describe(variable):
    if variable is None:
        return "no such variable"
    return f"{variable.path} {tuple(variable.shape)} {variable.dtype}"


def check_view(student, index, shape):
    """Fails if view `index`, of static `shape`, has another rank or channel count than
    `student` takes; height and width may differ (fully convolutional students)."""
    expected = input_shape(student)
    if expected is None or shape.rank is None:
        return
    channels = shape[-1] if shape.rank else None
    if shape.rank != len(expected) or (
        channels is not None and expected[-1] is not None and channels != expected[-1]
    ):
        raise ValueError(
            f"OKDPH's students take images of shape {tuple(expected[1:])} ([B, H, W, C], "
            f"{expected[-1]} channel(s)); view {index} has shape {tuple(shape)}."
        )


def input_shape(model):
    """The shape (batch included) of the images a student takes; None when unknown."""
    try:
        return tuple(model.inputs[0].shape)
    except (AttributeError, IndexError, TypeError, ValueError):
        return None


def output_width(model):
    """The number of logits a student (or each branch) outputs; None when unknown."""
    try:
        width = model.outputs[0].shape[-1]
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
    # A multi-branch network (`models.multi_branch`) outputs a dict with its logits.
    try:
        output = model.output
    except AttributeError:  # a Sequential model never called
        output = None
    if isinstance(output, dict) and "logits" in output:
        width = output["logits"].shape[-1]
    return None if width is None else int(width)


def input_rank(model):
    """Rank (batch included) of the images a student takes; 4 when unknown."""
    try:
        return len(model.inputs[0].shape)
    except (AttributeError, IndexError, TypeError, ValueError):
        return 4


def split_views(x, student, network_names):
    """One image batch per network, and whether all networks share one.

    Args:
        x: a tuple of one batch `[B, H, W, C]` per network, a tensor
            `[B, N, H, W, C]` (N networks), or one batch `[B, H, W, C]` for
            every network.
        student: a student, for the image rank and channels it takes.
        network_names: the networks that take a view, in order
            (`Method.network_names`: the students, then the HWMs).

    Returns:
        `(views, shared)`: a list of one batch per network, and whether they are one batch.
    """
    num_views = len(network_names)
    expected = f"{num_views} views, one per network ({', '.join(network_names)})"
    image_rank = input_rank(student)
    if isinstance(x, (list, tuple)):
        if len(x) != num_views:
            raise ValueError(f"OKDPH takes {expected}; got {len(x)}.")
        views = list(x)
        for index, view in enumerate(views):
            check_view(student, index, tf.TensorShape(getattr(view, "shape", None)))
        return views, False
    if isinstance(x, dict):
        raise ValueError("OKDPH takes an image tensor or a tuple of views, not a dict.")
    x = tf.convert_to_tensor(x)
    rank = x.shape.rank
    if rank == image_rank:
        check_view(student, 0, x.shape)
        return [x] * num_views, True
    if rank == image_rank + 1:
        if x.shape[1] is not None and x.shape[1] != num_views:
            raise ValueError(
                f"OKDPH takes {expected} on axis 1 of a [B, {num_views}, ...] tensor; "
                f"got shape {x.shape}."
            )
        check_view(student, 0, x.shape[:1] + x.shape[2:])
        return tf.unstack(x, num=num_views, axis=1), False
    raise ValueError(
        f"OKDPH expected images of rank {image_rank} (one batch shared by "
        f"every network) or rank {image_rank + 1} ([B, {num_views}, ...], one view "
        f"per network); got shape {x.shape}."
    )


def check_labels(labels, student):
    """Integer class indices `[B]`, checked in the graph to lie in `[0, num_classes)`.

    The range check is a `tf.debugging.Assert` that the labels (hence the
    losses and the update) depend on, so a bad batch stops the step before
    any variable changes, in `tf.function` and under any strategy. XLA
    (`jit_compile=True`) drops Assert ops: `OKDPH.fit` and the other entry
    points also check the input (`labels.checked_input`).
    """
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank == 2 and labels.shape[-1] == 1:
        labels = tf.squeeze(labels, axis=-1)
    if labels.shape.rank != 1:
        raise ValueError(
            "OKDPH takes integer class indices of shape [B]; got labels of "
            f"shape {labels.shape} (one-hot labels are not supported: pass their "
            "argmax over the last axis)."
        )
    if labels.dtype.is_bool:
        labels = tf.cast(labels, tf.int32)
    if not (labels.dtype.is_integer or labels.dtype.is_floating):
        raise ValueError(
            f"OKDPH takes integer class indices as labels; got labels of dtype {labels.dtype.name}."
        )
    num_classes = output_width(student)
    if num_classes is None:  # unknown until called: the loss checks what it can
        return tf.cast(labels, tf.int32)
    return tf.cast(labels_lib.in_range(labels, num_classes), tf.int32)


def make_groups(groups):
    """The flat list of students `OKDPH(objective="okdph_groups")` holds, checked.

    Args:
        groups: a list of groups, each a `(builder, count)` pair or a list of
            built models of one architecture (a group of one: a one-model
            list); or a flat list of models, read as groups of consecutive
            models of one architecture (what a saved model holds).

    Returns:
        The students, group by group; `group_bounds` recovers the groups.
    """
    if not isinstance(groups, (list, tuple)) or not groups:
        validation.fail(
            "students",
            groups,
            "a non-empty list of groups, each a (builder, count) pair or a list of models",
        )
    if all(isinstance(g, keras.Model) for g in groups):  # a flat list: the groups it holds
        flat = list(groups)
        groups = [flat[start:stop] for start, stop in group_bounds(flat)]
    members = [_group_members(index, group) for index, group in enumerate(groups)]
    for index, group in enumerate(members):
        _check_built(group, first=sum(len(g) for g in members[:index]))
        try:
            _check_homogeneous(group)
        except ValueError as error:
            raise ValueError(f"Group {index} mixes architectures: {error}") from None
    for index in range(1, len(members)):
        if _signature(members[index][0]) == _signature(members[index - 1][0]):
            raise ValueError(
                f"Groups {index - 1} and {index} have the same architecture: make them one "
                "group (each group has one HWM)."
            )
    students = [s for group in members for s in group]
    if len({id(s) for s in students}) != len(students):
        raise ValueError("The same model object appears twice among the students.")
    if not any(len(group) >= 2 for group in members):
        raise ValueError(
            f"Groups of sizes {[len(g) for g in members]} have no hybrid-weight model: "
            "at least one group needs two or more students."
        )
    for index, group in enumerate(members[1:], start=1):
        for what, describe in (("images", input_shape), ("logits", output_width)):
            mine, theirs = describe(group[0]), describe(members[0][0])
            mine, theirs = (v[1:] if what == "images" and v else v for v in (mine, theirs))
            if mine != theirs:
                raise ValueError(
                    f"Every group must take the same images and output the same logits: "
                    f"group 0 {what} {theirs}, group {index} {what} {mine}."
                )
    return students


def _group_members(index, group):
    if isinstance(group, keras.Model):
        return [group]
    if isinstance(group, (list, tuple)) and len(group) == 2 and callable(group[0]):
        if not isinstance(group[0], keras.Model):
            builder, count = group
            count = validation.check_integer(f"the count of group {index}", count, low=1)
            return [builder() for _ in range(count)]
    if (
        isinstance(group, (list, tuple))
        and group
        and all(isinstance(s, keras.Model) for s in group)
    ):
        return list(group)
    validation.fail(
        f"group {index}", group, "a (builder, count) pair or a non-empty list of keras.Model"
    )


def _check_built(students, *, first):
    for m, student in enumerate(students, start=first):
        if not isinstance(student, keras.Model):
            raise ValueError(f"Student {m} is a {type(student).__name__}, not a keras.Model.")
        if not student.built or not student.trainable_variables:
            raise ValueError(
                f"Student {m} ({student.name}) has no variables yet: build it before "
                "handing it to OKDPH (start it with keras.Input, or call it on a batch)."
            )


def group_bounds(students):
    """`(start, stop)` of each run of consecutive students of one architecture."""
    bounds, start = [], 0
    for m in range(1, len(students) + 1):
        if m == len(students) or _signature(students[m]) != _signature(students[start]):
            bounds.append((start, m))
            start = m
    return bounds


def _signature(student):
    variables = list(student.trainable_variables) + list(student.non_trainable_variables)
    return tuple((tuple(v.shape), str(v.dtype)) for v in variables)
