"""Beyond the paper: students of several architectures, several hybrid models per batch.

The paper's own limits: parameter hybridization needs students of one
architecture, and one hybrid-weight model (HWM) per batch samples the region
between the students once. `HybridGroups` trains groups of homogeneous students
(one HWM per group of two or more) that distil from one another's mean logits;
`HybridSamples` runs K HWMs of K Dirichlet draws per batch. Both are OKDPH's
losses on OKDPH's step, and train with `callbacks.Fusion`.
"""

import tensorflow as tf

from okdph_keras import hwm, hybrid, losses, validation
from okdph_keras import students as students_lib
from okdph_keras.methods.base import Method
from okdph_keras.methods.distillation import HybridDistillation


class HybridGroups(HybridDistillation):
    """OKDPH over groups of homogeneous students, each group with its own HWM.

    Student m of group g minimises
    `omega*CE(z_m) + (1-omega)*CE(z_{h,g}) + beta*tau^2*KL(p_e || p_m)`, where
    `z_{h,g}` is group g's HWM and `z_e` the mean logits of every network (all
    students and all HWMs), without gradient; a student alone in its group has
    no HWM and weighs its own CE 1. The total is the sum over every student.
    Fusion pulls each group toward its own HWM; `identical_init` makes each
    group's students start identical.

    Networks and views, in this order: the students, group by group
    (`student_0`, ...), then one HWM per group of two or more (`hwm_<g>`, g the
    group's index). `OKDPH(students=...)` takes a list of groups, each a
    `(builder, count)` pair or a list of models, e.g.
    `[(resnet110_builder, 2), (resnet32_builder, 2)]`.
    """

    takes_groups = True
    run_name_suffix = Method.run_name_suffix  # `_okdph_groups`, unlike OKDPH's

    def build_networks(self, students, num_students):
        if num_students is not None:
            validation.fail(
                "num_students", num_students, "None with groups (each group gives its count)"
            )
        return students_lib.make_groups(students)

    def make_identical(self, networks):
        for start, stop in students_lib.group_bounds(networks):
            super().make_identical(networks[start:stop])

    def hybrid_groups(self, networks):
        return [(a, b) for a, b in students_lib.group_bounds(networks) if b - a >= 2]

    def hwm_names(self, networks):
        bounds = students_lib.group_bounds(networks)
        return [f"hwm_{g}" for g, (a, b) in enumerate(bounds) if b - a >= 2]

    def network_names(self, networks):
        return [f"student_{m}" for m in range(len(networks))] + self.hwm_names(networks)

    def draw_coefficients(self, mode, networks, seed, settings):
        """Each group's coefficients on its own segment (a group of one: 1)."""
        del settings
        segments = []
        for g, (start, stop) in enumerate(students_lib.group_bounds(networks)):
            segments.append(hybrid.sample_coefficients(mode, stop - start, seed, stream=g))
        return tf.concat(segments, axis=0)

    def network_outputs(self, networks, views, coefficients, *, training, **hwm_options):
        hwm_gradient, state = hwm_options["hwm_gradient"], list(hwm_options["hwm_state"] or ())
        logits = [network(view, training=training) for network, view in zip(networks, views)]
        hwms = []
        for j, (start, stop) in enumerate(self.hybrid_groups(networks)):
            count = len(hwm.integer_positions(networks[start]))
            group_state, state = state[:count], state[count:]
            hwms.append(
                hwm.hybrid_logits(
                    networks[start:stop],
                    views[len(networks) + j],
                    coefficients[start:stop],
                    hwm_gradient=hwm_gradient,
                    training=training,
                    hwm_state=group_state or None,
                )
            )
        bounds = students_lib.group_bounds(networks)
        return {"students": logits, "hwm": hwms[0], "hwms": hwms, "groups": bounds}

    def losses(self, labels, outputs, settings, *, epoch, training):
        del epoch, training
        student_ce = [losses.cross_entropy(labels, z) for z in outputs["students"]]
        hwm_ce = [losses.cross_entropy(labels, z) for z in outputs["hwms"]]
        kd = self.distillation_terms(outputs, settings)
        omega = settings["omega"]
        data, hybrids = [], iter(hwm_ce)
        for start, stop in outputs["groups"]:
            if stop - start == 1:
                data.append(student_ce[start])
            else:
                own = omega * tf.add_n(student_ce[start:stop])
                data.append(own + (stop - start) * (1.0 - omega) * next(hybrids))
        total = tf.add_n(data) + settings["beta"] * tf.add_n(kd)
        return {
            "student_ce": student_ce,
            "hwm_ce": hwm_ce[0],
            "kd": kd,
            "total": total,
            "hwms": list(zip(outputs["hwms"], hwm_ce)),
        }


class HybridSamples(HybridDistillation):
    """OKDPH with K hybrid-weight models per batch (`hybrid_samples=K`).

    Every batch draws K coefficient vectors r_1..r_K ~ Dir(1) and runs the K
    HWMs `sum_m r_km theta_m`, all on the HWM's view (they differ in weights,
    not input). The mean of their cross-entropies takes the place of the one
    HWM's CE, and the distillation target `z_e` is the mean logits of the M
    students and the K HWMs. `OKDPH.coefficients` keeps the mean of the K draws:
    fusion pulls toward that mean-coefficient hybrid (the centre of the region
    the K hybrids sampled), and evaluation reports it as `hwm`. In training,
    `hwm_accuracy` is the first draw's and `hwm_ce` the mean over the K. K = 1
    is OKDPH with `hybrid="dirichlet"`, draw for draw.
    """

    defaults = {**HybridDistillation.defaults, "hybrid": "dirichlet", "hybrid_samples": 2}
    run_name_suffix = Method.run_name_suffix

    def settings(self, values, *, dataset=None, model=None):
        settings = super().settings(values, dataset=dataset, model=model)
        if settings["hybrid_samples"] > 1 and settings["hybrid"] != "dirichlet":
            validation.fail(
                "hybrid",
                settings["hybrid"],
                f"'dirichlet' with hybrid_samples={settings['hybrid_samples']} "
                "(K 'mean' hybrids would all be the same model)",
            )
        return settings

    def draw_coefficients(self, mode, networks, seed, settings):
        """`[M]` for K = 1 (OKDPH's draw), else `[K, M]`."""
        samples = settings["hybrid_samples"]
        if samples == 1:
            return hybrid.sample_coefficients(mode, len(networks), seed)
        return hybrid.sample_coefficients(mode, len(networks), seed, samples=samples)

    def fusion_coefficients(self, coefficients):
        if coefficients.shape.rank == 1:
            return coefficients
        return tf.reduce_mean(coefficients, axis=0)

    def network_outputs(self, networks, views, coefficients, *, training, **hwm_options):
        coefficients = tf.convert_to_tensor(coefficients)
        if coefficients.shape.rank == 1:  # K = 1, or evaluation with the kept mean
            return super().network_outputs(
                networks, views, coefficients, training=training, **hwm_options
            )
        logits = [network(view, training=training) for network, view in zip(networks, views)]
        hwms = [
            hwm.hybrid_logits(networks, views[len(networks)], r, training=training, **hwm_options)
            for r in tf.unstack(coefficients)
        ]
        return {"students": logits, "hwm": hwms[0], "hwms": hwms}
