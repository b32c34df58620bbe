"""The modules the multi-branch baselines add: ONE's gate, OKDDip's attention, FFL's fusion.

Each is a serialisable Keras layer whose sizes follow its input, as
`docs/BASELINES.md` sections 2.2, 2.4 and 2.5 describe them. BatchNormalization
has torch's defaults and convolutions are He-normal (`okdph_keras.models.layers`).
Their loss terms are in `branch_losses`.
"""

import keras

from okdph_keras.baselines.branch_losses import OKDDIP_PEERS
from okdph_keras.models.layers import batch_norm
from okdph_keras.validation import check_integer, fail


@keras.saving.register_keras_serializable(package="okdph_keras")
class OneGate(keras.layers.Layer):
    """ONE's gate: global average pooling -> Dense(m) -> BatchNorm -> ReLU -> softmax.

    Args:
        num_branches: m, an integer >= 2: the number of gate weights.

    Call args:
        inputs: the shared trunk's feature map `[B, H, W, F]`.

    Returns:
        The gate weights `[B, m]`, summing to 1 over the branches.

    Example:
        >>> gate = OneGate(2)
        >>> weights = gate(shared_features, training=True)  # [B, 2]
    """

    def __init__(self, num_branches, **kwargs):
        super().__init__(**kwargs)
        self.num_branches = check_integer("num_branches", num_branches, low=2)
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.dense = keras.layers.Dense(self.num_branches)
        self.norm = batch_norm()

    def build(self, input_shape):
        self.dense.build((input_shape[0], input_shape[-1]))
        self.norm.build((input_shape[0], self.num_branches))

    def call(self, inputs, training=None):
        x = self.norm(self.dense(self.pool(inputs)), training=training)
        return keras.ops.softmax(keras.ops.relu(x), axis=-1)

    def get_config(self):
        return {**super().get_config(), "num_branches": self.num_branches}


@keras.saving.register_keras_serializable(package="okdph_keras")
class OkddipAttention(keras.layers.Layer):
    """OKDDip's attention `a_ij = softmax_j((W_q h_i) . (W_k h_j))` over the peers.

    `W_q` and `W_k` are bias-free projections from the F pooled features to
    `F // factor`, shared by all peers; each peer attends to every peer, itself
    included. The leader is not an input.

    Args:
        factor: the projection's reduction factor, an integer >= 1 (the reference: 8).

    Call args:
        inputs: a list of P >= 2 peer features `[B, F]` (pooled, before the classifier).

    Returns:
        The attention `[B, P, P]`, rows summing to 1.

    Example:
        >>> attention = OkddipAttention()(pooled[:-1])  # all branches but the leader
    """

    def __init__(self, factor=8, **kwargs):
        super().__init__(**kwargs)
        self.factor = check_integer("factor", factor, low=1)

    def build(self, input_shape):
        if len(input_shape) < 2:
            fail("the number of peers", len(input_shape), f"an integer >= 2 ({OKDDIP_PEERS})")
        features = input_shape[0][-1]
        if features < self.factor:
            fail("the peers' feature width", features, f">= factor={self.factor}")
        self.query = keras.layers.Dense(features // self.factor, use_bias=False)
        self.key = keras.layers.Dense(features // self.factor, use_bias=False)
        for projection in (self.query, self.key):
            projection.build((None, features))

    def call(self, inputs):
        peers = keras.ops.stack(inputs, axis=1)
        energy = keras.ops.einsum("bid,bjd->bij", self.query(peers), self.key(peers))
        return keras.ops.softmax(energy, axis=-1)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="okdph_keras")
class FusionModule(keras.layers.Layer):
    """FFL's fusion classifier on the branches' last feature maps.

    Concatenation (m F channels) -> depthwise 3x3 conv without bias -> BatchNorm ->
    ReLU -> 1x1 conv to F channels without bias -> BatchNorm -> ReLU -> global
    average pooling -> Dense(C). For m = 2, F = 64 it has 9,728 trainable weights
    plus the classifier's 64 C + C.

    Args:
        num_classes: C, an integer >= 1.

    Call args:
        inputs: a list of m >= 2 feature maps `[B, H, W, F]`.

    Returns:
        The fused logits `[B, C]`.

    Example:
        >>> fused_logits = FusionModule(100)(branch_maps, training=True)
    """

    def __init__(self, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = check_integer("num_classes", num_classes, low=1)

    def build(self, input_shape):
        if len(input_shape) < 2:
            fail("the number of feature maps", len(input_shape), "an integer >= 2")
        widths = sorted({shape[-1] for shape in input_shape})
        if len(widths) != 1:
            fail("the feature maps' widths", widths, "one width for every branch")
        batch, height, width, channels = input_shape[0]
        concatenated = (batch, height, width, channels * len(input_shape))
        self.depthwise = keras.layers.DepthwiseConv2D(
            3, padding="same", use_bias=False, depthwise_initializer="he_normal"
        )
        self.depthwise_norm = batch_norm()
        self.pointwise = keras.layers.Conv2D(
            channels, 1, use_bias=False, kernel_initializer="he_normal"
        )
        self.pointwise_norm = batch_norm()
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.classifier = keras.layers.Dense(self.num_classes)
        self.depthwise.build(concatenated)
        self.depthwise_norm.build(concatenated)
        self.pointwise.build(concatenated)
        self.pointwise_norm.build((batch, height, width, channels))
        self.classifier.build((batch, channels))

    def call(self, inputs, training=None):
        x = keras.ops.concatenate(inputs, axis=-1)
        x = keras.ops.relu(self.depthwise_norm(self.depthwise(x), training=training))
        x = keras.ops.relu(self.pointwise_norm(self.pointwise(x), training=training))
        return self.classifier(self.pool(x))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}
