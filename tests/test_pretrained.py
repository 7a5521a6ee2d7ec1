"""Tests for the pretrained-weight loaders (mie_jax.models.pretrained, mie_jax.models.convert).

The checkpoints are written by the tests: random arrays under torchvision's and
pytorch-i3d's names and shapes, spelled out here as those libraries build their
state dicts (not derived from the loaders' name mapping). Models are tiny and
built abstractly, except in the optional tests against torchvision itself,
which need torch and are skipped without it.
"""

import copy
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

from mie_jax.models import convert, encoders, pretrained
from mie_jax.models.i3d import I3D, MIXED_CHANNELS, STAGES, STEM_CHANNELS, _scale
from mie_jax.models.resnet import ResNet, resnet18, resnet50
from mie_jax.train.config import make_config

WIDTH = 4
I3D_MULTIPLIER = 1 / 16
TORCH_REASON = "torch is not installed (optional: the comparison with torchvision's ResNets needs it)"


def _batch_norm(shapes, name, channels):
    for suffix in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"{name}.{suffix}"] = (channels,)
    shapes[f"{name}.num_batches_tracked"] = ()


def torchvision_resnet_shapes(block, stage_sizes, in_channels, width):
    """torchvision's ``ResNet.state_dict()`` names and shapes, as ``torchvision.models.resnet`` builds them."""
    expansion = 1 if block == "basic" else 4
    shapes = {"conv1.weight": (width, in_channels, 7, 7)}
    _batch_norm(shapes, "bn1", width)
    inplanes = width
    for layer, (blocks, multiple) in enumerate(zip(stage_sizes, (1, 2, 4, 8)), start=1):
        planes = width * multiple
        for i in range(blocks):
            prefix = f"layer{layer}.{i}"
            if block == "basic":
                convs = [(planes, inplanes, 3), (planes, planes, 3)]
            else:
                convs = [(planes, inplanes, 1), (planes, planes, 3), (planes * 4, planes, 1)]
            for j, (out, inp, k) in enumerate(convs, start=1):
                shapes[f"{prefix}.conv{j}.weight"] = (out, inp, k, k)
                _batch_norm(shapes, f"{prefix}.bn{j}", out)
            stride = 2 if layer > 1 and i == 0 else 1
            if stride != 1 or inplanes != planes * expansion:
                shapes[f"{prefix}.downsample.0.weight"] = (planes * expansion, inplanes, 1, 1)
                _batch_norm(shapes, f"{prefix}.downsample.1", planes * expansion)
            inplanes = planes * expansion
    shapes["fc.weight"] = (1000, inplanes)
    shapes["fc.bias"] = (1000,)
    return shapes


def pytorch_i3d_shapes(in_channels, multiplier):
    """pytorch-i3d's ``InceptionI3d.state_dict()`` names and shapes, channels scaled like :class:`I3D`."""
    shapes = {}

    def unit(name, out, inp, k):
        shapes[f"{name}.conv3d.weight"] = (out, inp, k, k, k)
        _batch_norm(shapes, f"{name}.bn", out)

    c1a, c2b, c2c = (_scale(c, multiplier) for c in STEM_CHANNELS)
    unit("Conv3d_1a_7x7", c1a, in_channels, 7)
    unit("Conv3d_2b_1x1", c2b, c1a, 1)
    unit("Conv3d_2c_3x3", c2c, c2b, 3)
    features = c2c
    for name in (n for stage in STAGES for n in stage):
        c0, r1, c1, r2, c2, c3 = (_scale(c, multiplier) for c in MIXED_CHANNELS[name])
        unit(f"{name}.b0", c0, features, 1)
        unit(f"{name}.b1a", r1, features, 1)
        unit(f"{name}.b1b", c1, r1, 3)
        unit(f"{name}.b2a", r2, features, 1)
        unit(f"{name}.b2b", c2, r2, 3)
        unit(f"{name}.b3b", c3, features, 1)
        features = c0 + c1 + c2 + c3
    shapes["logits.conv3d.weight"] = (400, features, 1, 1, 1)
    shapes["logits.conv3d.bias"] = (400,)
    return shapes


def random_weights(shapes, seed=0):
    """Distinct random arrays of ``shapes``; positive running variances, int64 counters."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in shapes.items():
        if name.endswith("num_batches_tracked"):
            weights[name] = np.array(7, np.int64)
        elif name.endswith("running_var"):
            weights[name] = rng.uniform(0.5, 2.0, shape).astype(np.float32)
        else:
            weights[name] = rng.normal(size=shape).astype(np.float32)
    return weights


def _abstract(constructor):
    return nnx.eval_shape(lambda: constructor(nnx.Rngs(0)))


def _tiny_resnet(block, in_channels=3):
    stages = (2, 1, 1, 1) if block == "basic" else (1, 2, 1, 1)
    return _abstract(lambda rngs: ResNet(block, stages, in_channels, width=WIDTH, rngs=rngs)), stages


def _tiny_i3d(in_channels=3):
    return _abstract(lambda rngs: I3D(in_channels, width_multiplier=I3D_MULTIPLIER, rngs=rngs))


def _torch_layout(path, array):
    """A model variable's array in torch's layout (kernels ``[*window, in, out]`` -> ``[out, in, *window]``)."""
    array = np.asarray(array)
    if path[-1] == "kernel":
        return np.transpose(array, (array.ndim - 1, array.ndim - 2, *range(array.ndim - 2)))
    return array


def _contents(model):
    """The model's variables in torch's layout, as a multiset of (shape, bytes)."""
    return sorted(
        (a.shape, a.tobytes())
        for a in (
            _torch_layout(path, v.get_value()) for path, v in nnx.iter_graph(model) if isinstance(v, nnx.Variable)
        )
    )


def _file_contents(weights, dropped_prefix):
    return sorted(
        (a.shape, a.tobytes())
        for name, a in weights.items()
        if not name.startswith(dropped_prefix) and not name.endswith("num_batches_tracked")
    )


@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_resnet_safetensors_round_trip(tmp_path, block):
    model, stages = _tiny_resnet(block)
    weights = random_weights(torchvision_resnet_shapes(block, stages, 3, WIDTH))
    path = tmp_path / "resnet.safetensors"
    save_file(weights, str(path))
    pretrained.load_backbone(model, path)
    # Every array of the file, and nothing else, is in the model.
    assert _contents(model) == _file_contents(weights, "fc.")
    # And in its place.
    np.testing.assert_array_equal(_torch_layout(("kernel",), model.conv.kernel[...]), weights["conv1.weight"])
    np.testing.assert_array_equal(model.bn.var[...], weights["bn1.running_var"])
    shortcut = model.blocks[stages[0]].shortcut
    np.testing.assert_array_equal(
        _torch_layout(("kernel",), shortcut.conv.kernel[...]), weights["layer2.0.downsample.0.weight"]
    )
    np.testing.assert_array_equal(shortcut.bn.mean[...], weights["layer2.0.downsample.1.running_mean"])
    last = "layer4.0.conv3" if block == "bottleneck" else "layer4.0.conv2"
    last_conv = model.blocks[-1].conv3 if block == "bottleneck" else model.blocks[-1].conv2
    np.testing.assert_array_equal(_torch_layout(("kernel",), last_conv.kernel[...]), weights[f"{last}.weight"])


def test_i3d_round_trip_in_pytorch_i3d_layout(tmp_path):
    model = _tiny_i3d()
    weights = random_weights(pytorch_i3d_shapes(3, I3D_MULTIPLIER))
    path = tmp_path / "rgb_imagenet.safetensors"
    save_file(weights, str(path))
    pretrained.load_backbone(model, path)
    assert _contents(model) == _file_contents(weights, "logits.")
    np.testing.assert_array_equal(
        _torch_layout(("kernel",), model.conv_1a.conv.kernel[...]), weights["Conv3d_1a_7x7.conv3d.weight"]
    )
    mixed_4d = model.stages[1][2]
    np.testing.assert_array_equal(
        _torch_layout(("kernel",), mixed_4d.branch_3.conv.kernel[...]), weights["Mixed_4d.b3b.conv3d.weight"]
    )
    np.testing.assert_array_equal(mixed_4d.branch_2b.bn.var[...], weights["Mixed_4d.b2b.bn.running_var"])


def test_one_channel_stems_from_rgb_weights():
    """Depth I3D: the mean of the RGB filters; spectrogram ResNet: their sum."""
    i3d_weights = random_weights(pytorch_i3d_shapes(3, I3D_MULTIPLIER))
    depth = _tiny_i3d(in_channels=1)
    pretrained.load_i3d(depth, i3d_weights)
    rgb_stem = i3d_weights["Conv3d_1a_7x7.conv3d.weight"]
    np.testing.assert_allclose(
        _torch_layout(("kernel",), depth.conv_1a.conv.kernel[...]), rgb_stem.mean(axis=1, keepdims=True), rtol=1e-6
    )

    resnet_weights = random_weights(torchvision_resnet_shapes("basic", (2, 1, 1, 1), 3, WIDTH))
    audio, _ = _tiny_resnet("basic", in_channels=1)
    pretrained.load_resnet(audio, resnet_weights)
    np.testing.assert_allclose(
        _torch_layout(("kernel",), audio.conv.kernel[...]),
        resnet_weights["conv1.weight"].sum(axis=1, keepdims=True),
        rtol=1e-6,
    )


def test_flow_weights_load_into_a_two_channel_i3d():
    flow = _tiny_i3d(in_channels=2)
    weights = random_weights(pytorch_i3d_shapes(2, I3D_MULTIPLIER))
    pretrained.load_i3d(flow, weights)
    assert _contents(flow) == _file_contents(weights, "logits.")


def test_data_parallel_prefix_is_dropped():
    model, stages = _tiny_resnet("basic")
    weights = random_weights(torchvision_resnet_shapes("basic", stages, 3, WIDTH))
    pretrained.load_resnet(model, {f"module.{name}": array for name, array in weights.items()})
    assert _contents(model) == _file_contents(weights, "fc.")


def _bad_resnet_weights(kind, weights):
    weights = dict(weights)
    if kind == "missing":
        del weights["layer2.0.downsample.1.running_var"]
        return weights, ["layer2.0.downsample.1.running_var", f"({2 * WIDTH},)", "missing"]
    if kind == "unexpected":
        weights["layer5.0.conv1.weight"] = np.zeros((3, 3, 1, 1), np.float32)
        return weights, ["layer5.0.conv1.weight", "(3, 3, 1, 1)", "unexpected", "none"]
    weights["layer3.0.conv2.weight"] = np.zeros((4 * WIDTH, 4 * WIDTH, 1, 1), np.float32)
    expected = f"({4 * WIDTH}, {4 * WIDTH}, 3, 3)"
    return weights, ["layer3.0.conv2.weight", f"({4 * WIDTH}, {4 * WIDTH}, 1, 1)", expected]


@pytest.mark.parametrize("kind", ["missing", "unexpected", "wrong_shape"])
def test_resnet_bad_key_is_one_error_and_loads_nothing(tmp_path, kind):
    model, stages = _tiny_resnet("basic")
    good = random_weights(torchvision_resnet_shapes("basic", stages, 3, WIDTH), seed=1)
    pretrained.load_resnet(model, good)
    before = _contents(model)
    bad, fragments = _bad_resnet_weights(kind, random_weights(torchvision_resnet_shapes("basic", stages, 3, WIDTH)))
    path = tmp_path / "bad.safetensors"
    save_file(bad, str(path))
    with pytest.raises(ValueError) as error:
        pretrained.load_backbone(model, path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    for fragment in fragments:
        assert fragment in message
    assert _contents(model) == before  # Nothing written: the checks come first.


@pytest.mark.parametrize("kind", ["missing", "unexpected", "wrong_shape"])
def test_i3d_bad_key_is_one_error_and_loads_nothing(kind):
    model = _tiny_i3d()
    shapes = pytorch_i3d_shapes(3, I3D_MULTIPLIER)
    pretrained.load_i3d(model, random_weights(shapes, seed=1))
    before = _contents(model)
    weights = random_weights(shapes)
    if kind == "missing":
        name = "Mixed_5c.b1b.bn.weight"
        fragments = [name, str(shapes[name]), "missing"]
        del weights[name]
    elif kind == "unexpected":
        name = "Mixed_6a.b0.conv3d.weight"
        weights[name] = np.zeros((2, 2, 1, 1, 1), np.float32)
        fragments = [name, "(2, 2, 1, 1, 1)", "unexpected"]
    else:  # RGB weights into a flow model are a shape error, not a silent reduction.
        model = _tiny_i3d(in_channels=2)
        pretrained.load_i3d(model, random_weights(pytorch_i3d_shapes(2, I3D_MULTIPLIER), seed=1))
        before = _contents(model)
        name = "Conv3d_1a_7x7.conv3d.weight"
        fragments = [name, str(shapes[name]), str((shapes[name][0], 2, 7, 7, 7))]
    with pytest.raises(ValueError) as error:
        pretrained.load_i3d(model, weights, "rgb_imagenet.safetensors")
    for fragment in fragments + ["rgb_imagenet.safetensors"]:
        assert fragment in str(error.value)
    assert _contents(model) == before


def test_file_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="absent.safetensors"):
        pretrained.read_state_dict(tmp_path / "absent.safetensors")
    (tmp_path / "weights.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="expected a .safetensors or .pth/.pt file"):
        pretrained.read_state_dict(tmp_path / "weights.npz")
    (tmp_path / "resnet50.pth").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "torch", None)  # As on a machine without torch.
    with pytest.raises(ImportError, match="needs torch.*python -m mie_jax.models.convert"):
        pretrained.read_state_dict(tmp_path / "resnet50.pth")
    assert convert.main([str(tmp_path / "resnet50.pth")]) == 2
    with pytest.raises(TypeError, match="ResNet or I3D"):
        pretrained.load_backbone(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), tmp_path / "resnet50.pth")


def weights_config(entries):
    return make_config({"modalities": ("image", "text")}, [f"model.encoder_weights={entries}"])


def test_encoder_weights_entries():
    # Only the first "=" of an entry ends the modality: a path may hold "=".
    assert weights_config("image=/w/a=b.safetensors").model.encoder_weights == {"image": "/w/a=b.safetensors"}
    assert make_config({"modalities": ("image", "text")}).model.encoder_weights == {}
    for entries, match in [
        ("image", r"--set model\.encoder_weights=\.\.\. expects name=value entries .*got 'image'"),
        ("image=", r"--set model\.encoder_weights=\.\.\. expects name=value entries .*got 'image='"),
        (
            "audio=/w/x.safetensors",
            r"model\.encoder_weights names \['audio'\], not modalities of this run \['image', 'text'\]",
        ),
    ]:
        with pytest.raises(ValueError, match=match):
            weights_config(entries)
    # The nested form is checked the same way.
    with pytest.raises(ValueError, match=r"model\.encoder_weights names \['audio'\]"):
        make_config({"modalities": ("image", "text"), "model": {"encoder_weights": {"audio": "/w/x.safetensors"}}})


def test_encoder_weights_naming_a_modality_twice_is_refused():
    with pytest.raises(ValueError, match="twice"):
        weights_config("image=/a.safetensors,image=/b.safetensors")


def test_build_encoder_loads_the_modality_weights(tmp_path):
    """``--set model.encoder_weights=audio=FILE``: the 1-channel audio ResNet18 gets the file's backbone."""
    weights = random_weights(torchvision_resnet_shapes("basic", (2, 2, 2, 2), 3, WIDTH))
    path = tmp_path / "resnet18.safetensors"
    save_file(weights, str(path))
    config = make_config(
        {"modalities": ("audio", "visual"), "model": {"encoder": "resnet18", "resnet_width": WIDTH, "dim": 8}},
        [f"model.encoder_weights=audio={path}"],
    )
    rngs = nnx.Rngs(jax.random.key(0, impl="rbg"))  # The fastest sampler compiles.
    encoder = encoders.build_encoder(config, "resnet18", (32, 32, 1), rngs, "audio")
    stem = weights["conv1.weight"].sum(axis=1, keepdims=True)
    np.testing.assert_allclose(_torch_layout(("kernel",), encoder.backbone.conv.kernel[...]), stem, rtol=1e-6)
    np.testing.assert_array_equal(encoder.backbone.blocks[-1].bn2.var[...], weights["layer4.1.bn2.running_var"])
    with pytest.raises(ValueError, match="'bert' takes none.*bert_dir"):
        bert_config = make_config({"modalities": ("image", "text")}, [f"model.encoder_weights=text={path}"])
        encoders.build_encoder(bert_config, "bert", (6,), rngs, "text")


class _FirstValue(nnx.Module):
    """A stand-in backbone whose feature is the first value of its input: what the encoder feeds it."""

    def __call__(self, x, *, train):
        return x.reshape(x.shape[0], -1)[:, :1]


def test_pretrained_i3d_inputs_are_scaled_to_plus_minus_one():
    """pytorch-i3d's weights were trained on frames and flow in [-1, 1]."""
    encoder = encoders.ProjectedEncoder(_FirstValue(), 1, 1, rngs=nnx.Rngs(0), signed_pixels=True)
    encoder.projection.kernel[...] = jnp.ones((1, 1))
    encoder.projection.bias[...] = jnp.zeros((1,))
    pixels = jnp.asarray([0, 255], jnp.uint8).reshape(2, 1, 1, 1, 1)
    np.testing.assert_allclose(encoder(pixels)[:, 0], [-1.0, 1.0])
    np.testing.assert_allclose(encoder(jnp.full((1, 1, 1, 1, 1), 0.25))[:, 0], [0.25])  # Floats pass unchanged.


def test_paper_configs_warn_without_their_pretrained_weights():
    from experiments import configs
    from experiments.configs import paper

    sarcasm = make_config(configs.get_config("sarcasm"))
    warning = paper.missing_pretrained_warning("sarcasm", sarcasm)
    assert "\n" not in warning and "image: ImageNet ResNet50" in warning and "text: BERT-base" in warning
    complete = make_config(
        configs.get_config("sarcasm"), ["model.encoder_weights=image=/w/r50.safetensors", "model.bert_dir=/w/bert"]
    )
    assert paper.missing_pretrained_warning("sarcasm", complete) == ""
    nvgesture = paper.missing_pretrained_warning("nvgesture", make_config(configs.get_config("nvgesture")))
    assert all(f"{m}: I3D" in nvgesture for m in ("rgb", "depth", "flow"))
    assert paper.missing_pretrained_warning("mfeat", make_config(configs.get_config("mfeat"))) == ""


# The optional comparisons with torchvision itself.


def _torchvision_model(torch, torchvision, name, seed):
    """torchvision's ``name`` with random weights and BatchNorm statistics far from (0, 1), without ``fc``."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    model.fc = torch.nn.Identity()
    return model


def _relative_error(actual, expected):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def _jax_resnet(torch_model, name, tmp_path, dtype):
    """Our ResNet with ``torch_model``'s weights, through a safetensors file as a user would load them."""
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.detach().numpy().copy() for k, v in torch_model.state_dict().items()}, str(path))
    model = nnx.eval_shape(lambda: {"resnet18": resnet18, "resnet50": resnet50}[name](3, rngs=nnx.Rngs(0)))
    for _, variable in nnx.iter_graph(model):  # The loader casts to the variables' dtype.
        if isinstance(variable, nnx.Variable):
            variable.set_value(jax.ShapeDtypeStruct(variable.get_value().shape, dtype))
    pretrained.load_backbone(model, path)
    return model


# float32 agrees to 1e-5 in evaluation. In training, BatchNorm divides by the standard deviation
# of 16-64 values per channel, which magnifies rounding: on these random networks torch's own
# float32 outputs are up to 6e-5 (relative) from its float64 ones, and after SGD steps its
# running statistics are further still (ResNet50: 9e-3 after 3 steps at lr 1e-4, 0.3 at 1e-2).
# So float64 shows that the functions are the same, and float32 is held to torch's own error.
PRECISIONS = {"float32": (np.float32, 1e-5, 2e-4), "float64": (np.float64, 1e-10, 1e-10)}


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_equals_torchvision_in_eval_and_train_mode(tmp_path, name, precision):
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    torchvision = pytest.importorskip("torchvision", reason=TORCH_REASON)
    dtype, eval_tolerance, train_tolerance = PRECISIONS[precision]
    with jax.enable_x64(dtype == np.float64):
        reference = _torchvision_model(torch, torchvision, name, seed=0).to(getattr(torch, precision))
        model = _jax_resnet(reference, name, tmp_path, dtype)
        images = np.random.default_rng(1).normal(size=(4, 3, 64, 64)).astype(dtype)
        nhwc = jnp.asarray(images.transpose(0, 2, 3, 1))

        reference.eval()
        with torch.no_grad():
            expected_eval = reference(torch.from_numpy(images)).numpy()
        assert _relative_error(model(nhwc, train=False), expected_eval) < eval_tolerance

        reference.train()
        with torch.no_grad():
            expected_train = reference(torch.from_numpy(images)).numpy()
        assert _relative_error(model(nhwc, train=True), expected_train) < train_tolerance
        # One training forward pass: the running statistics moved as torch moved them (unbiased variance).
        stats = reference.state_dict()
        last_block = {"resnet18": "layer4.1", "resnet50": "layer4.2"}[name]
        assert _relative_error(model.bn.var[...], stats["bn1.running_var"].numpy()) < eval_tolerance
        assert (
            _relative_error(model.blocks[-1].bn2.var[...], stats[f"{last_block}.bn2.running_var"].numpy())
            < train_tolerance
        )


def _torch_sgd_statistics(torch, reference, batches, loss_weights, learning_rate, torch_dtype):
    """The running statistics of a copy of ``reference`` after one SGD step per batch, as float64."""
    model = copy.deepcopy(reference).to(torch_dtype).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate)
    for images in batches:
        optimizer.zero_grad()
        features = model(torch.from_numpy(images).to(torch_dtype))
        (features * torch.from_numpy(loss_weights).to(torch_dtype)).mean().backward()
        optimizer.step()
    return {name: value.double().numpy() for name, value in model.state_dict().items() if "running_" in name}


def _jax_sgd_statistics(model, batches, loss_weights, learning_rate):
    """The running statistics of ``model`` after one SGD step per batch, by torchvision's names."""
    graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)

    @jax.jit
    def step(params, batch_stats, images):
        def loss_fn(params):
            m = nnx.merge(graphdef, params, batch_stats, copy=True)
            return jnp.mean(m(images, train=True) * loss_weights), nnx.state(m, nnx.BatchStat)

        (_, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return jax.tree.map(lambda p, g: p - learning_rate * g, params, grads), new_stats

    for images in batches:
        params, batch_stats = step(params, batch_stats, jnp.asarray(images.transpose(0, 2, 3, 1)))
    trained = nnx.merge(graphdef, params, batch_stats)
    name_of = pretrained._resnet_name(trained)
    return {
        name_of(path): np.asarray(variable.get_value(), np.float64)
        for path, variable in nnx.iter_graph(trained)
        if isinstance(variable, nnx.BatchStat)
    }


def _worst_error(actual, expected):
    errors = {name: _relative_error(actual[name], expected[name]) for name in expected}
    worst = max(errors, key=errors.get)
    return worst, errors[worst]


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_running_statistics_agree_with_torchvision_after_sgd_steps(tmp_path, name, precision):
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    torchvision = pytest.importorskip("torchvision", reason=TORCH_REASON)
    dtype = PRECISIONS[precision][0]
    learning_rate = 1e-4 if precision == "float32" else 1e-2
    with jax.enable_x64(dtype == np.float64):
        reference = _torchvision_model(torch, torchvision, name, seed=2).to(getattr(torch, precision))
        model = _jax_resnet(reference, name, tmp_path, dtype)
        batches = np.random.default_rng(3).normal(size=(3, 4, 3, 64, 64)).astype(dtype)
        loss_weights = np.random.default_rng(4).normal(size=(4, model.out_features)).astype(dtype)
        ours = _jax_sgd_statistics(model, batches, loss_weights, learning_rate)
    theirs = _torch_sgd_statistics(torch, reference, batches, loss_weights, learning_rate, getattr(torch, precision))
    if precision == "float64":
        assert _worst_error(ours, theirs)[1] < 1e-8, _worst_error(ours, theirs)  # ResNet50: 6e-11.
    else:  # As close to the exact (float64) statistics as torch's float32 ones are.
        exact = _torch_sgd_statistics(
            torch, reference, batches.astype(np.float64), loss_weights.astype(np.float64), learning_rate, torch.float64
        )
        torch_error = _worst_error(theirs, exact)[1]
        assert _worst_error(ours, exact)[1] < 2 * torch_error + 1e-6, (_worst_error(ours, exact), torch_error)


def test_convert_writes_a_loadable_safetensors_file(tmp_path):
    torch = pytest.importorskip("torch", reason="torch is not installed (optional: converting needs it)")
    weights = random_weights(torchvision_resnet_shapes("basic", (2, 1, 1, 1), 3, WIDTH))
    source = tmp_path / "resnet.pth"
    torch.save({name: torch.from_numpy(array) for name, array in weights.items()}, source)
    assert convert.main([str(source)]) == 0
    converted = pretrained.read_state_dict(tmp_path / "resnet.safetensors")
    assert converted.keys() == weights.keys()
    for name, array in weights.items():
        np.testing.assert_array_equal(converted[name], array)
    np.testing.assert_array_equal(pretrained.read_state_dict(source)["conv1.weight"], weights["conv1.weight"])
