"""Multi-branch online distillation: ONE, CL-ILR, OKDDip, FFL, PCL.

The peers are the m branches of one `models.multi_branch` network (a shared trunk,
a last stage and classifier per branch), `OKDPH.students[0]`. A method's extra
modules (ONE's gate, OKDDip's attention, FFL's fusion module, PCL's peer-ensemble
classifier and temporal-mean network) are the next entries of `OKDPH.students`,
so they train, save and resume with the model like any student. Each branch is
reported as `student_<k>`; the exported student is one branch with the trunk as
a plain Keras model (`models.export_branch`; PCL: the temporal-mean network's).

Losses: `baselines.branch_losses` (BASELINES.md section 2, with the decisions of
section 5). The distillation weight is `beta * r(e; rampup_epochs)`; defaults
beta 1, tau 3, ramp-up 80 epochs (the reference's alpha, T and ramp-up).
"""

import keras
import tensorflow as tf

from okdph_keras import losses, validation
from okdph_keras.baselines import branch_layers, branch_losses
from okdph_keras.methods.base import Method
from okdph_keras.models.multi_branch import export_branch, multi_branch


class BranchDistillation(Method):
    """The multi-branch methods' shared shape; subclasses say their modules and losses.

    Attributes:
        per_branch_inputs: whether branch k sees view k (PCL), or all branches
            share view 0.
        min_branches: the fewest branches the method works with.
    """

    uses_hwm = False
    has_hwm = False
    uses_epoch = True
    per_branch_inputs = False
    min_branches = 2
    defaults = {**Method.defaults, "beta": 1.0, "temperature": 3.0, "rampup_epochs": 80.0}

    def network_builder(self, model, num_classes, input_shape, *, num_students):
        def build():
            return multi_branch(
                model,
                num_classes,
                input_shape,
                branches=num_students,
                per_branch_inputs=self.per_branch_inputs,
                **self.network_options(num_students),
            )

        return build

    def network_options(self, num_branches):
        """Extra `multi_branch` options of this method's network."""
        del num_branches
        return {}

    def build_networks(self, students, num_students):
        if isinstance(students, (list, tuple)):  # a saved model's networks, modules included
            return list(students)
        network = students if isinstance(students, keras.Model) else students()
        output = getattr(network, "output", None)
        if not isinstance(output, dict) or "logits" not in output:
            validation.fail(
                f"the network of {self.name}",
                type(network).__name__,
                "a multi-branch network (okdph_keras.models.multi_branch) or a builder of one",
            )
        branches = int(output["logits"].shape[1])
        if num_students is not None and num_students != branches:
            validation.fail("num_students", num_students, f"{branches}, the network's branches")
        if branches < self.min_branches:
            validation.fail(
                f"the branches of {self.name}", branches, f"an integer >= {self.min_branches}"
            )
        return [network, *self.modules(network)]

    def modules(self, network):
        """The method's extra modules, built for `network`'s outputs."""
        del network
        return []

    def make_identical(self, networks):
        del networks  # one network: nothing to copy

    def num_peers(self, networks):
        return int(networks[0].output["logits"].shape[1])

    def student_models(self, networks):
        return [export_branch(networks[0], k) for k in range(self.num_peers(networks))]

    def network_outputs(self, networks, views, coefficients, *, training, **hwm_options):
        del coefficients, hwm_options
        num_branches = self.num_peers(networks)
        outputs = dict(networks[0](self._inputs(views, num_branches), training=training))
        outputs["students"] = tf.unstack(outputs["logits"], num=num_branches, axis=1)
        outputs["hwm"] = None
        outputs["modules"] = networks[1:]
        return outputs

    def _inputs(self, views, num_branches):
        return list(views[:num_branches]) if self.per_branch_inputs else views[0]

    def losses(self, labels, outputs, settings, *, epoch, training):
        weight = settings["beta"] * branch_losses.rampup(epoch, settings["rampup_epochs"])
        terms = self.terms(labels, outputs, settings, weight=weight, training=training)
        return {
            "student_ce": terms["ce"],
            "hwm_ce": None,
            "kd": terms["kd"],
            "total": terms["total"],
        }

    def terms(self, labels, outputs, settings, *, weight, training):
        """The `branch_losses` terms of this method (a dict with `ce`, `kd`, `total`)."""
        raise NotImplementedError


class NativeEnsemble(BranchDistillation):
    """ONE: the branches distil from their gated ensemble `z_e = sum_i g_i z_i`, detached.

    `L = sum_i CE(z_i) + CE(z_e) + w sum_i tau^2 KL(p(sg z_e) || p(z_i))`; the gate
    (`OneGate`, on the trunk's pooled features) learns through `CE(z_e)`.
    """

    def modules(self, network):
        trunk = network.output["trunk"]
        gate = branch_layers.OneGate(self.num_peers([network]), name="one_gate")
        gate.build((None, 1, 1, trunk.shape[-1]))
        return [gate]

    def terms(self, labels, outputs, settings, *, weight, training):
        trunk = outputs["trunk"]
        gate = outputs["modules"][0](trunk[:, None, None, :], training=training)
        return branch_losses.one_terms(
            outputs["students"],
            gate,
            labels,
            temperature=settings["temperature"],
            weight=weight,
        )


class CollaborativeBranches(BranchDistillation):
    """CL-ILR: branch i distils from the other branches' mean logits; trunk gradients / m."""

    def network_options(self, num_branches):
        return {"split_gradient_scale": 1.0 / num_branches}

    def terms(self, labels, outputs, settings, *, weight, training):
        del training
        return branch_losses.cl_ilr_terms(
            outputs["students"], labels, temperature=settings["temperature"], weight=weight
        )


class DiversePeers(BranchDistillation):
    """OKDDip: peers distil from attention-weighted peers, the leader (last) from their mean.

    A comparison gives it 4 branches (3 peers and the leader, the authors' default)
    when the base has fewer; fewer than 3 are refused (with one peer the attention
    is the constant 1 and the method degenerates).
    """

    min_branches = 3
    default_num_students = 4

    def modules(self, network):
        features = network.output["features"]
        attention = branch_layers.OkddipAttention(name="okddip_attention")
        peers = self.num_peers([network]) - 1
        attention.build([(None, features.shape[-1])] * peers)
        return [attention]

    def terms(self, labels, outputs, settings, *, weight, training):
        del training
        features = tf.unstack(outputs["features"], axis=1)
        attention = outputs["modules"][0](features[:-1])
        return branch_losses.okddip_terms(
            outputs["students"],
            attention,
            labels,
            temperature=settings["temperature"],
            weight=weight,
        )


class FeatureFusion(BranchDistillation):
    """FFL: a fusion classifier on the branches' maps and the branches distil from each other.

    The fusion module is trained by the same SGD as the network, on the same
    schedule, momentum and weight decay: the reference's second optimizer has the
    same settings (with its schedule bug fixed), and SGD updates each variable on
    its own, so one optimizer over both is the same update.
    """

    def modules(self, network):
        maps = network.output["maps"]
        fusion = branch_layers.FusionModule(network.output["logits"].shape[-1], name="ffl_fusion")
        fusion.build([(None, *maps.shape[2:])] * self.num_peers([network]))
        return [fusion]

    def terms(self, labels, outputs, settings, *, weight, training):
        maps = tf.unstack(outputs["maps"], axis=1)
        fused = outputs["modules"][0](maps, training=training)
        terms = branch_losses.ffl_terms(
            outputs["students"], fused, labels, temperature=settings["temperature"], weight=weight
        )
        # The fused classifier's own distillation term is reported with the branches'.
        kd = [k + terms["fused_kd"] / len(terms["kd"]) for k in terms["kd"]]
        return dict(terms, kd=kd)


class PeerCollaboration(BranchDistillation):
    """PCL: a peer-ensemble teacher and temporal-mean peers; the temporal mean is deployed.

    Branch k sees view k through the shared trunk. `students` holds the network,
    the peer-ensemble classifier (`Dense` on the concatenated pooled features) and
    the temporal-mean network, which the optimizer leaves alone: after every step
    its trainable weights follow the network's with
    `a = min(1 - 1/(s+1), ema_decay)`, `s` the steps taken (BASELINES.md section 5:
    the real global step, not the reference's constant 0); its BatchNorm
    statistics are its own. Its branches are reported and exported.
    """

    per_branch_inputs = True
    defaults = {**BranchDistillation.defaults, "ema_decay": 0.999}

    def modules(self, network):
        features = network.output["features"]
        classes = network.output["logits"].shape[-1]
        ensemble = keras.layers.Dense(classes, name="pcl_ensemble")
        ensemble.build((None, features.shape[1] * features.shape[2]))
        return [ensemble, keras.models.clone_model(network)]  # the temporal mean

    def trained_students(self, students):
        return students[:2]

    def student_models(self, networks):
        return [export_branch(networks[2], k) for k in range(self.num_peers(networks))]

    def network_outputs(self, networks, views, coefficients, *, training, **hwm_options):
        outputs = super().network_outputs(
            networks, views, coefficients, training=training, **hwm_options
        )
        inputs = self._inputs(views, self.num_peers(networks))
        mean_logits = tf.unstack(networks[2](inputs, training=training)["logits"], axis=1)
        outputs["trained"], outputs["students"] = outputs["students"], mean_logits
        return outputs

    def terms(self, labels, outputs, settings, *, weight, training):
        del training
        features = outputs["features"]
        ensemble = outputs["modules"][0](tf.reshape(features, [tf.shape(features)[0], -1]))
        terms = branch_losses.pcl_terms(
            outputs["trained"],
            ensemble,
            labels,
            mean_logits=outputs["students"],
            temperature=settings["temperature"],
            weight=weight,
        )
        # Reported: the temporal-mean branches, the deployed networks.
        ce = [losses.cross_entropy(labels, z) for z in outputs["students"]]
        return dict(terms, ce=ce, kd=[k + p for k, p in zip(terms["kd"], terms["peer_kd"])])

    def after_step(self, model, step):
        network, _, mean = model.students
        branch_losses.ema_update(
            mean.trainable_variables,
            network.trainable_variables,
            step + 1,
            model.settings["ema_decay"],
        )
