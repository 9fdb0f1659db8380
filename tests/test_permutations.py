import functools
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from hypothesis import given, settings
from hypothesis import strategies as st

from manifold_metric import archs, image_models, permutations
from manifold_metric.permutations import Axis, PermSpec


def _arch(kind, **sizes):
  return archs.with_data(archs.make({"kind": kind, **sizes}), num_classes=10)


def _first(arch):
  return image_models.neuron_groups(arch)[archs.first_group(arch)]


@functools.partial(jax.jit, static_argnames=("arch", "train"))
def _logits(arch, v, x, train=False):
  return image_models.apply(arch, v, x, train=train)


SMALL_RESNET = {"stages": [8, 16, 16, 32], "mids": [[8, 8], [16, 16], [16, 16], [32, 32]]}
# Inner widths unlike the stages' and each other's, so a size from the wrong group shows.
TINY_RESNET = {"stages": [4, 8, 8, 8], "mids": [[3, 5]] * 4}
ARCHS = {
    "mlp": _arch("mlp"),
    "cnn": _arch("cnn"),
    "cnn_flatten": _arch("cnn", channels=[8]),
    "resnet18": _arch("resnet18", **SMALL_RESNET),
    "resnet18_tiny": _arch("resnet18", **TINY_RESNET),
}
X = jax.random.normal(jax.random.key(1), (8, 8, 8, 3))


def _variables(arch):
  """Random variables of the model's shapes (traced, not compiled: compiling
  Flax's initializers costs tens of seconds): fan-in scaled kernels, nonzero
  biases, and running statistics away from their initial values, so that a
  wrong gather shows; zero-centred means keep about half the units alive in
  eval mode (a uniform shift silenced the whole net)."""
  shapes = jax.eval_shape(lambda: image_models.init(arch, jax.random.key(0), X.shape[1:]))
  rng = np.random.default_rng(zlib.crc32(repr(arch).encode()))

  def draw(path, s):
    name = jax.tree_util.keystr(path)
    if len(s.shape) > 1:
      return rng.normal(0, np.prod(s.shape[:-1]) ** -0.5, s.shape)
    if "var" in name or "scale" in name:
      return rng.uniform(0.5, 1.5, s.shape)
    return 0.1 * rng.normal(size=s.shape)

  return jax.tree_util.tree_map_with_path(lambda p, s: np.asarray(draw(p, s), s.dtype), shapes)


def assert_same_outputs(a, b, msg=""):
  """Equal up to float32 reordering: the permuted net sums the same terms in another order."""
  assert jnp.abs(a).max() > 0.1, "outputs are all ~0, so the check would be vacuous"
  np.testing.assert_allclose(b, a, rtol=0, atol=1e-5 * float(jnp.abs(a).max()), err_msg=msg)


VARIABLES = {k: _variables(a) for k, a in ARCHS.items()}


@settings(max_examples=10, deadline=None)
@given(name=st.sampled_from(sorted(ARCHS)), seed=st.integers(0, 2**31 - 1), train=st.booleans())
def test_first_group_permutation_preserves_outputs(name, seed, train):
  arch, v = ARCHS[name], VARIABLES[name]
  spec = _first(arch)
  perm = jax.random.permutation(jax.random.key(seed), spec.size)
  assert not np.array_equal(perm, np.arange(spec.size)) or spec.size < 3
  vp = permutations.permute(spec, v, perm)
  assert_same_outputs(_logits(arch, v, X, train), _logits(arch, vp, X, train))


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_every_group_permutation_preserves_outputs(name):
  arch, v = ARCHS[name], VARIABLES[name]
  for i, (group, spec) in enumerate(image_models.neuron_groups(arch).items()):
    permutations.check(spec, v)
    perm = jax.random.permutation(jax.random.key(i), spec.size)
    vp = permutations.permute(spec, v, perm)
    assert_same_outputs(_logits(arch, v, X), _logits(arch, vp, X), group)


def test_wrong_permutation_changes_outputs():
  """The property tests can fail: permuting only the producer breaks the model."""
  arch, v = ARCHS["cnn"], VARIABLES["cnn"]
  spec = _first(arch)
  broken = permutations.PermSpec(spec.size, spec.axes[:2])
  vp = permutations.permute(broken, v, jnp.roll(jnp.arange(spec.size), 1))
  assert jnp.abs(_logits(arch, v, X) - _logits(arch, vp, X)).max() > 1e-3


def test_resnet_stem_group_is_the_first_stage_stream():
  spec = _first(ARCHS["resnet18"])
  paths = {a.path for a in spec.axes}
  assert "params/stem_conv/kernel" in paths
  assert "batch_stats/stem_bn/mean" in paths
  assert "params/blocks_1/conv2/kernel" in paths  # the residual stream
  assert "params/blocks_2/proj_conv/kernel" in paths  # consumed by stage 2
  assert spec.stem_axis == -1


def _axes(*entries):
  """'<path under params> <axis> <role>' is one Axis; 'bn <name>' a BatchNorm's four leaves."""
  axes = []
  for e in entries:
    if e.startswith("bn "):
      n = e[3:]
      axes += [
          Axis(f"params/{n}/scale", 0),
          Axis(f"params/{n}/bias", 0),
          Axis(f"batch_stats/{n}/mean", 0),
          Axis(f"batch_stats/{n}/var", 0),
      ]
    else:
      path, axis, role = e.split()
      axes.append(Axis(f"params/{path}", int(axis), role))
  return tuple(axes)


def _mid(b, width):
  return PermSpec(
      width,
      _axes(
          f"blocks_{b}/conv1/kernel 3 out", f"bn blocks_{b}/bn1", f"blocks_{b}/conv2/kernel 2 in"
      ),
      None,
  )


PINNED = {
    "mlp": (
        _arch("mlp", hidden=[20, 12]),
        {
            "hiddens_0": PermSpec(
                20,
                _axes("hiddens_0/kernel 1 out", "hiddens_0/bias 0 out", "hiddens_1/kernel 0 in"),
                -1,
            ),
            "hiddens_1": PermSpec(
                12, _axes("hiddens_1/kernel 1 out", "hiddens_1/bias 0 out", "out/kernel 0 in"), None
            ),
        },
    ),
    "cnn": (
        _arch("cnn"),
        {
            "convs_0": PermSpec(
                8, _axes("convs_0/kernel 3 out", "convs_0/bias 0 out", "convs_1/kernel 2 in"), -1
            ),
            "convs_1": PermSpec(
                32, _axes("convs_1/kernel 3 out", "convs_1/bias 0 out", "fc/kernel 0 in"), None
            ),
        },
    ),
    # Dict order is part of the result: first_group takes the first group and
    # widen_all draws one key per group in this order.
    "resnet18": (
        _arch("resnet18", **TINY_RESNET),
        {
            "stage_0": PermSpec(
                4,
                _axes(
                    "stem_conv/kernel 3 out",
                    "bn stem_bn",
                    "blocks_0/conv1/kernel 2 in",
                    "blocks_0/conv2/kernel 3 out",
                    "bn blocks_0/bn2",
                    "blocks_1/conv1/kernel 2 in",
                    "blocks_1/conv2/kernel 3 out",
                    "bn blocks_1/bn2",
                    "blocks_2/conv1/kernel 2 in",
                    "blocks_2/proj_conv/kernel 2 in",
                ),
                -1,
            ),
            "blocks_0_mid": _mid(0, 3),
            "blocks_1_mid": _mid(1, 5),
            "blocks_2_mid": _mid(2, 3),
            "blocks_3_mid": _mid(3, 5),
            "stage_1": PermSpec(
                8,
                _axes(
                    "blocks_2/proj_conv/kernel 3 out",
                    "bn blocks_2/proj_bn",
                    "blocks_2/conv2/kernel 3 out",
                    "bn blocks_2/bn2",
                    "blocks_3/conv1/kernel 2 in",
                    "blocks_3/conv2/kernel 3 out",
                    "bn blocks_3/bn2",
                    "blocks_4/conv1/kernel 2 in",
                    "blocks_4/proj_conv/kernel 2 in",
                ),
                None,
            ),
            "blocks_4_mid": _mid(4, 3),
            "blocks_5_mid": _mid(5, 5),
            "stage_2": PermSpec(
                8,
                _axes(
                    "blocks_4/proj_conv/kernel 3 out",
                    "bn blocks_4/proj_bn",
                    "blocks_4/conv2/kernel 3 out",
                    "bn blocks_4/bn2",
                    "blocks_5/conv1/kernel 2 in",
                    "blocks_5/conv2/kernel 3 out",
                    "bn blocks_5/bn2",
                    "blocks_6/conv1/kernel 2 in",
                    "blocks_6/proj_conv/kernel 2 in",
                ),
                None,
            ),
            "blocks_6_mid": _mid(6, 3),
            "blocks_7_mid": _mid(7, 5),
            "stage_3": PermSpec(
                8,
                _axes(
                    "blocks_6/proj_conv/kernel 3 out",
                    "bn blocks_6/proj_bn",
                    "blocks_6/conv2/kernel 3 out",
                    "bn blocks_6/bn2",
                    "blocks_7/conv1/kernel 2 in",
                    "blocks_7/conv2/kernel 3 out",
                    "bn blocks_7/bn2",
                    "out/kernel 0 in",
                ),
                None,
            ),
        },
    ),
}


@pytest.mark.parametrize("kind", sorted(PINNED))
def test_neuron_groups_are_pinned(kind):
  arch, expected = PINNED[kind]
  groups = image_models.neuron_groups(arch)
  assert list(groups) == list(expected)
  for name, spec in expected.items():
    assert groups[name] == spec, name


# Axes no group carries: the image's channels, the classes, and (for now) the
# CNN's fc neurons (fc's outputs, out's inputs).
UNGROUPED = {
    "mlp": ["hiddens_0/kernel 0", "out/kernel 1", "out/bias 0"],
    "cnn": [
        "convs_0/kernel 2",
        "fc/kernel 1",
        "fc/bias 0",
        "out/kernel 0",
        "out/kernel 1",
        "out/bias 0",
    ],
    "resnet18": ["stem_conv/kernel 2", "out/kernel 1", "out/bias 0"],
}


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_groups_cover_every_channel_axis_once(name):
  """Every kernel's in/out channel axes and every bias and BatchNorm leaf are in
  exactly one group, as 'in' (consumer) or 'out', except the UNGROUPED axes."""
  arch, v = ARCHS[name], VARIABLES[name]
  flat = traverse_util.flatten_dict(v, sep="/")
  channel_axes = {
      (p, ax): "in" if ax == x.ndim - 2 else "out"
      for p, x in flat.items()
      for ax in ((x.ndim - 2, x.ndim - 1) if p.endswith("kernel") else (0,))
  }
  for e in UNGROUPED[arch.kind]:
    path, axis = e.split()
    del channel_axes[(f"params/{path}", int(axis))]
  carried = [
      ((a.path, a.axis % flat[a.path].ndim), a.role)
      for spec in image_models.neuron_groups(arch).values()
      for a in spec.axes
  ]
  assert len(carried) == len({pa for pa, _ in carried})  # no axis in two groups
  assert dict(carried) == channel_axes


def test_flatten_consumer_permutes_channel_blocks():
  x = jnp.arange(12.0)  # 3 pixels x 4 channels, channels fastest (NHWC flatten)
  out = permutations.take(x, jnp.array([1, 0, 3, 2]), 0, 4)
  np.testing.assert_array_equal(out.reshape(3, 4), x.reshape(3, 4)[:, [1, 0, 3, 2]])


def test_check_names_missing_path():
  spec = permutations.PermSpec(4, (permutations.Axis("params/nope/kernel", 0),))
  with pytest.raises(ValueError, match="params/nope/kernel"):
    permutations.check(spec, VARIABLES["mlp"])
