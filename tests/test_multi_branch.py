"""Multi-branch networks: hand-counted sizes, a shared trunk, distinct branches, exported branches."""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

from okdph_keras.models import export_branch, get_model, multi_branch

CIFAR = (32, 32, 3)


# --- Parameter counts by hand: [trainable, BN moving statistics] of each piece. ---


def conv(c_in, c_out, k, bias=False):
    return np.array([k * k * c_in * c_out + (c_out if bias else 0), 0])


def bn(c):
    return np.array([2 * c, 2 * c])  # gamma, beta; moving mean, moving variance


def dense(f_in, f_out):
    return np.array([f_in * f_out + f_out, 0])


def basic_stage(c_in, c_out, blocks, stride):
    total = 0
    for index in range(blocks):
        s, c = (stride, c_in) if index == 0 else (1, c_out)
        total += conv(c, c_out, 3) + bn(c_out) + conv(c_out, c_out, 3) + bn(c_out)
        if s != 1 or c != c_out:
            total += conv(c, c_out, 1) + bn(c_out)
    return total


def bottleneck_stage(c_in, planes, blocks, stride, widen=1):
    total, width, c_out = 0, planes * widen, 4 * planes
    for index in range(blocks):
        s, c = (stride, c_in) if index == 0 else (1, c_out)
        total += conv(c, width, 1) + bn(width) + conv(width, width, 3) + bn(width)
        total += conv(width, c_out, 1) + bn(c_out)
        if s != 1 or c != c_out:
            total += conv(c, c_out, 1) + bn(c_out)
    return total


def dense_block(c):
    total = 0
    for _ in range(6):
        total += bn(c) + conv(c, 48, 1) + bn(48) + conv(48, 12, 3)
        c += 12
    return total, c


def densenet_parts(num_classes):
    block1, c = dense_block(24)
    trunk = conv(3, 24, 3) + block1 + bn(c) + conv(c, c // 2, 1)
    block2, c = dense_block(c // 2)
    trunk = trunk + block2 + bn(c) + conv(c, c // 2, 1)
    block3, c = dense_block(c // 2)
    return trunk, block3 + bn(c) + dense(c, num_classes)


def vgg_conv(c_in, c_out):
    return conv(c_in, c_out, 3, bias=True) + bn(c_out)


def small_cnn_parts(num_classes, width=16, channels=1):
    def block(c_in, c_out):
        return conv(c_in, c_out, 3) + bn(c_out)

    trunk = block(channels, width) + block(width, 2 * width)
    return trunk, block(2 * width, 4 * width) + dense(4 * width, num_classes)


def hand_parts(name, num_classes):
    """`(trunk, branch)`: the hand counts of the architecture's shared and per-branch parts."""
    stem16 = conv(3, 16, 3) + bn(16)
    if name == "resnet32":
        trunk = stem16 + basic_stage(16, 16, 5, 1) + basic_stage(16, 32, 5, 2)
        return trunk, basic_stage(32, 64, 5, 2) + dense(64, num_classes)
    if name in ("resnet110", "wrn_20_8"):
        blocks, widen = (12, 1) if name == "resnet110" else (2, 8)
        trunk = stem16 + bottleneck_stage(16, 16, blocks, 1, widen)
        trunk = trunk + bottleneck_stage(64, 32, blocks, 2, widen)
        return trunk, bottleneck_stage(128, 64, blocks, 2, widen) + dense(256, num_classes)
    if name == "vgg16":
        widths = (3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512)
        trunk = sum(vgg_conv(a, b) for a, b in zip(widths, widths[1:]))
        branch = 3 * vgg_conv(512, 512) + 2 * dense(512, 512) + dense(512, num_classes)
        return trunk, branch
    if name == "densenet_40_12":
        return densenet_parts(num_classes)
    if name == "small_cnn":
        return small_cnn_parts(num_classes)
    assert name == "resnet18"
    trunk = conv(3, 64, 7) + bn(64) + basic_stage(64, 64, 2, 1) + basic_stage(64, 128, 2, 2)
    trunk = trunk + basic_stage(128, 256, 2, 2)
    return trunk, basic_stage(256, 512, 2, 2) + dense(512, num_classes)


def counts(model):
    """[trainable, non-trainable] parameters of a model, from its variables."""
    return np.array(
        [
            sum(int(np.prod(v.shape)) for v in variables)
            for variables in (model.trainable_variables, model.non_trainable_variables)
        ]
    )


# Trainable parameters of the single networks (the models' docstrings; torchvision's ResNet-18).
SINGLE_TRAINABLE = {
    ("resnet32", 10): 466_906,
    ("resnet32", 100): 472_756,
    ("resnet110", 10): 1_147_738,
    ("resnet110", 100): 1_170_868,
    ("wrn_20_8", 10): 6_848_090,
    ("wrn_20_8", 100): 6_871_220,
    ("vgg16", 10): 15_253_578,
    ("vgg16", 100): 15_299_748,
    ("densenet_40_12", 10): 176_122,
    ("densenet_40_12", 100): 188_092,
    ("resnet18", 1000): 11_689_512,
}
INPUT_SHAPES = {"small_cnn": (8, 8, 1), "resnet18": (64, 64, 3)}


@functools.cache
def network(name, num_classes, branches, per_branch_inputs=False):
    """Each network is built once for the module (resnet110 takes seconds)."""
    shape = INPUT_SHAPES.get(name, CIFAR)
    return multi_branch(
        name, num_classes, shape, branches=branches, per_branch_inputs=per_branch_inputs
    )


@pytest.mark.parametrize(("name", "num_classes"), sorted(SINGLE_TRAINABLE))
def test_hand_counts_add_up_to_the_single_networks(name, num_classes):
    trunk, branch = hand_parts(name, num_classes)
    assert trunk[0] + branch[0] == SINGLE_TRAINABLE[name, num_classes]


def test_resnet32_parts_match_the_reference_sizes():
    trunk, branch = hand_parts("resnet32", 10)
    layer3 = branch - dense(64, 10)
    assert (round(trunk[0] / 1e6, 3), round(layer3[0] / 1e6, 3)) == (0.113, 0.354)


@pytest.mark.parametrize(
    ("name", "num_classes", "branches", "per_branch_inputs"),
    [
        ("small_cnn", 10, 2, False),
        ("small_cnn", 10, 3, True),
        ("resnet32", 10, 2, False),
        ("resnet32", 100, 3, False),
        ("resnet32", 10, 3, True),
        ("resnet110", 100, 2, False),
        ("wrn_20_8", 10, 2, False),
        ("vgg16", 100, 2, False),
        ("densenet_40_12", 100, 2, False),
        ("densenet_40_12", 10, 3, True),
        ("resnet18", 1000, 2, False),
    ],
)
def test_one_trunk_and_a_branch_each(name, num_classes, branches, per_branch_inputs):
    trunk, branch = hand_parts(name, num_classes)
    model = network(name, num_classes, branches, per_branch_inputs)
    np.testing.assert_array_equal(counts(model), trunk + branches * branch)


# Per architecture: features F, last map (H, W, Ch) and pooled trunk Ft.
SHAPES = {
    "small_cnn": (64, (4, 4, 64), 32),
    "resnet32": (64, (8, 8, 64), 32),
    "resnet110": (256, (8, 8, 256), 128),
    "wrn_20_8": (256, (8, 8, 256), 128),
    "vgg16": (512, (1, 1, 512), 512),
    "densenet_40_12": (132, (8, 8, 132), 60),
    "resnet18": (512, (2, 2, 512), 256),
}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_output_shapes(name):
    features, maps, trunk = SHAPES[name]
    num_classes = 1000 if name == "resnet18" else 10
    outputs = network(name, num_classes, 2).output
    assert outputs["logits"].shape == (None, 2, num_classes)
    assert outputs["features"].shape == (None, 2, features)
    assert outputs["maps"].shape == (None, 2, *maps)
    assert outputs["trunk"].shape == (None, trunk)
    if name in ("resnet32", "densenet_40_12"):
        assert network(name, 10, 3, True).output["trunk"].shape == (None, 3, trunk)


def run(model, images):
    outputs = model(images, training=False)
    return {key: keras.ops.convert_to_numpy(value) for key, value in outputs.items()}


def randomize(model, rng):
    """Random BN scales, offsets and statistics; the He-normal kernels are already random."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape
            scale, offset = rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c)
            layer.set_weights([scale, offset, rng.normal(0, 0.1, c), rng.uniform(0.5, 2, c)])


def small_network(name, branches, rng, **options):
    """A network on 16x16 images (32x32 for vgg16) with random BN parameters and statistics."""
    shape = CIFAR if name == "vgg16" else (16, 16, 3)
    model = multi_branch(name, 7, shape, branches=branches, **options)
    randomize(model, rng)
    return model, shape


def test_features_and_maps_are_each_branchs_own(rng):
    model, shape = small_network("resnet32", 2, rng)
    images = rng.uniform(0, 1, size=(3, *shape)).astype("float32")
    outputs = run(model, images)
    assert outputs["logits"].shape == (3, 2, 7)
    np.testing.assert_allclose(outputs["features"], outputs["maps"].mean(axis=(2, 3)), atol=1e-5)
    for k in range(2):
        kernel, bias = model.get_layer(f"branch{k}_logits").get_weights()
        expected = outputs["features"][:, k] @ kernel + bias
        np.testing.assert_allclose(outputs["logits"][:, k], expected, rtol=1e-5, atol=1e-4)


def test_changing_branch_0_changes_only_branch_0(rng):
    model, shape = small_network("resnet32", 2, rng)
    images = rng.uniform(0, 1, size=(3, *shape)).astype("float32")
    before = run(model, images)
    for layer in model.layers:
        if layer.name.startswith("branch0_") and layer.weights:
            layer.set_weights([w + rng.normal(0, 0.1, w.shape) for w in layer.get_weights()])
    after = run(model, images)
    assert not np.allclose(after["logits"][:, 0], before["logits"][:, 0])
    np.testing.assert_array_equal(after["logits"][:, 1], before["logits"][:, 1])
    np.testing.assert_array_equal(after["trunk"], before["trunk"])
    model.get_layer("stem_conv").kernel.assign(rng.normal(0, 0.5, (3, 3, 3, 16)))
    changed = run(model, images)["logits"]
    for k in range(2):  # the trunk feeds every branch
        assert not np.allclose(changed[:, k], after["logits"][:, k])


def test_per_branch_inputs_run_the_trunk_on_each_view(rng):
    model, shape = small_network("resnet32", 3, rng, per_branch_inputs=True)
    views = [rng.uniform(0, 1, size=(4, *shape)).astype("float32") for _ in range(3)]
    other = rng.uniform(0, 1, size=(4, *shape)).astype("float32")
    before, after = run(model, views), run(model, [views[0], other, views[2]])
    for key in ("logits", "trunk"):
        assert not np.allclose(after[key][:, 1], before[key][:, 1]), key
        for k in (0, 2):
            np.testing.assert_array_equal(after[key][:, k], before[key][:, k])
    # In training each view has its own batch statistics: branch 0 ignores view 1.
    trained = [model(v, training=True)["logits"][:, 0] for v in (views, [views[0], *views[1:]])]
    changed = model([views[0], other, views[2]], training=True)["logits"][:, 0]
    np.testing.assert_allclose(trained[0], trained[1], atol=1e-6)
    np.testing.assert_allclose(changed, trained[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["small_cnn", "resnet32", "densenet_40_12", "vgg16"])
def test_exported_branch_is_the_single_network_with_the_branchs_weights(name, rng):
    model, shape = small_network(name, 3, rng, **({"dropout": 0.5} if name == "vgg16" else {}))
    single = get_model(name, 7, shape, **({"dropout": 0.5} if name == "vgg16" else {}))
    images = rng.uniform(0, 1, size=(2, *shape)).astype("float32")
    logits = run(model, images)["logits"]
    for k in (0, 2):
        student = export_branch(model, k)
        assert len(student.inputs) == len(student.outputs) == 1
        assert student.name == f"{model.name}_branch{k}"
        layers = [(type(layer), layer.output.shape) for layer in student.layers]
        assert layers == [(type(layer), layer.output.shape) for layer in single.layers]
        assert [v.shape for v in student.weights] == [v.shape for v in single.weights]
        if name != "small_cnn":  # its layers keep Keras's automatic names
            names = [layer.name for layer in student.layers[1:]]
            assert names == [layer.name for layer in single.layers[1:]]
        exported = keras.ops.convert_to_numpy(student(images, training=False))
        scale = np.abs(logits).max()
        np.testing.assert_allclose(exported, logits[:, k], rtol=1e-5, atol=1e-5 * scale)
    for variable in model.trainable_variables:  # the export holds a copy
        variable.assign(variable * 1.5)
    again = keras.ops.convert_to_numpy(student(images, training=False))
    np.testing.assert_array_equal(again, exported)


def test_exported_branch_of_per_branch_network_sees_its_own_view(rng):
    model, shape = small_network("resnet32", 2, rng, per_branch_inputs=True)
    views = [rng.uniform(0, 1, size=(2, *shape)).astype("float32") for _ in range(2)]
    logits = run(model, views)["logits"]
    for k in range(2):
        exported = keras.ops.convert_to_numpy(export_branch(model, k)(views[k], training=False))
        np.testing.assert_allclose(exported, logits[:, k], rtol=1e-5, atol=1e-5)


def test_multi_branch_network_saves_and_loads(rng, tmp_path):
    model = multi_branch("small_cnn", 3, branches=2, per_branch_inputs=True, width=4)
    randomize(model, rng)
    views = [rng.uniform(0, 1, size=(2, 8, 8, 1)).astype("float32") for _ in range(2)]
    model.save(tmp_path / "network.keras")
    loaded = keras.saving.load_model(tmp_path / "network.keras")
    expected, got = run(model, views), run(loaded, views)
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        export_branch(loaded, 1)(views[1]), expected["logits"][:, 1], rtol=1e-6, atol=1e-6
    )


def test_exported_branch_saves_and_converts_to_tflite(rng, tmp_path):
    from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415 (only this test)

    model = multi_branch("small_cnn", 5, branches=2, width=4)
    images = rng.uniform(0, 1, size=(2, 8, 8, 1)).astype("float32")
    model(images, training=True)  # BN moving statistics off their initial values
    expected = run(model, images)["logits"][:, 1]
    student = export_branch(model, 1)
    student.save(tmp_path / "student.keras")
    loaded = keras.saving.load_model(tmp_path / "student.keras")
    np.testing.assert_allclose(loaded(images, training=False), expected, rtol=1e-5, atol=1e-5)
    converter = tf.lite.TFLiteConverter.from_keras_model(loaded)
    interpreter = Interpreter(model_content=converter.convert())
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], images)
    interpreter.invoke()
    tflite = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(tflite, expected, atol=1e-4)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="name='resnet33' is not allowed"):
        multi_branch("resnet33", 10, branches=2)
    with pytest.raises(ValueError, match="branches=1 is not allowed; it must be an integer"):
        multi_branch("small_cnn", 10, branches=1)
    with pytest.raises(ValueError, match="per_branch_inputs='yes' is not allowed"):
        multi_branch("small_cnn", 10, branches=2, per_branch_inputs="yes")
    model = multi_branch("small_cnn", 10, branches=2, width=2)
    for branch in (-1, 2, 1.0):
        with pytest.raises(ValueError, match=f"branch={branch!r} is not allowed"):
            export_branch(model, branch)
