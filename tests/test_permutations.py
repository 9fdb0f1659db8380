import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from hypothesis import given, settings, strategies as st

from manifold_metric import models, permutations
from manifold_metric.permutations import Axis, PermSpec

SMALL_RESNET = {"stages": [8, 16, 16, 32], "mids": [[8, 8], [16, 16], [16, 16], [32, 32]]}
# Inner widths unlike the stages' and each other's, so a size from the wrong group shows.
TINY_RESNET = {"stages": [4, 8, 8, 8], "mids": [[3, 5]] * 4}
ARCHS = {
    "mlp": models.default_arch("mlp", 10),
    "cnn": models.default_arch("cnn", 10),
    "cnn_flatten": models.default_arch("cnn", 10, channels=[8]),
    "resnet18": models.default_arch("resnet18", 10, **SMALL_RESNET),
    "resnet18_tiny": models.default_arch("resnet18", 10, **TINY_RESNET),
}
X = jax.random.normal(jax.random.key(1), (8, 8, 8, 3))


def _variables(arch):
  v = models.init(arch, jax.random.key(0), X.shape[1:])
  if "batch_stats" in v:
    # Non-trivial running statistics, so a wrong gather shows; zero-centred shifts keep
    # about half the units alive in eval mode (a uniform shift silenced the whole net).
    def perturb(path, a):
      key = jax.random.fold_in(jax.random.key(3), zlib.crc32(jax.tree_util.keystr(path).encode()))
      if path[-1].key == "mean":
        return a + 0.1 * jax.random.normal(key, a.shape)
      return a * jax.random.uniform(key, a.shape, minval=0.5, maxval=1.5)
    v["batch_stats"] = jax.tree_util.tree_map_with_path(perturb, v["batch_stats"])
  return v


def assert_same_outputs(a, b, msg=""):
  """Equal up to float32 reordering: the permuted net sums the same terms in another order."""
  assert jnp.abs(a).max() > 0.1, "outputs are all ~0, so the check would be vacuous"
  np.testing.assert_allclose(b, a, rtol=0, atol=1e-5 * float(jnp.abs(a).max()), err_msg=msg)


VARIABLES = {k: _variables(a) for k, a in ARCHS.items()}


@settings(max_examples=10, deadline=None)
@given(name=st.sampled_from(sorted(ARCHS)), seed=st.integers(0, 2**31 - 1),
       train=st.booleans())
def test_first_group_permutation_preserves_outputs(name, seed, train):
  arch, v = ARCHS[name], VARIABLES[name]
  spec = models.first_group(arch)
  perm = jax.random.permutation(jax.random.key(seed), spec.size)
  assert not np.array_equal(perm, np.arange(spec.size)) or spec.size < 3
  vp = permutations.permute(spec, v, perm)
  assert_same_outputs(models.logits(arch, v, X, train), models.logits(arch, vp, X, train))


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_every_group_permutation_preserves_outputs(name):
  arch, v = ARCHS[name], VARIABLES[name]
  for i, (group, spec) in enumerate(models.neuron_groups(arch).items()):
    permutations.check(spec, v)
    perm = jax.random.permutation(jax.random.key(i), spec.size)
    vp = permutations.permute(spec, v, perm)
    assert_same_outputs(models.logits(arch, v, X), models.logits(arch, vp, X), group)


def test_wrong_permutation_changes_outputs():
  """The property tests can fail: permuting only the producer breaks the model."""
  arch, v = ARCHS["cnn"], VARIABLES["cnn"]
  spec = models.first_group(arch)
  broken = permutations.PermSpec(spec.size, spec.axes[:2])
  vp = permutations.permute(broken, v, jnp.roll(jnp.arange(spec.size), 1))
  assert jnp.abs(models.logits(arch, v, X) - models.logits(arch, vp, X)).max() > 1e-3


def test_resnet_stem_group_is_the_first_stage_stream():
  spec = models.first_group(ARCHS["resnet18"])
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
      axes += [Axis(f"params/{n}/scale", 0), Axis(f"params/{n}/bias", 0),
               Axis(f"batch_stats/{n}/mean", 0), Axis(f"batch_stats/{n}/var", 0)]
    else:
      path, axis, role = e.split()
      axes.append(Axis(f"params/{path}", int(axis), role))
  return tuple(axes)


def _mid(b, width):
  return PermSpec(width, _axes(f"blocks_{b}/conv1/kernel 3 out", f"bn blocks_{b}/bn1",
                               f"blocks_{b}/conv2/kernel 2 in"), None)


PINNED = {
    "mlp": (models.default_arch("mlp", 10, hidden=[20, 12]), {
        "hiddens_0": PermSpec(20, _axes("hiddens_0/kernel 1 out", "hiddens_0/bias 0 out",
                                        "hiddens_1/kernel 0 in"), -1),
        "hiddens_1": PermSpec(12, _axes("hiddens_1/kernel 1 out", "hiddens_1/bias 0 out",
                                        "out/kernel 0 in"), None),
    }),
    "cnn": (models.default_arch("cnn", 10), {
        "convs_0": PermSpec(8, _axes("convs_0/kernel 3 out", "convs_0/bias 0 out",
                                     "convs_1/kernel 2 in"), -1),
        "convs_1": PermSpec(32, _axes("convs_1/kernel 3 out", "convs_1/bias 0 out",
                                      "fc/kernel 0 in"), None),
    }),
    # Dict order is part of the result: first_group takes the first group and
    # widen_all draws one key per group in this order.
    "resnet18": (models.default_arch("resnet18", 10, **TINY_RESNET), {
        "stage_0": PermSpec(4, _axes(
            "stem_conv/kernel 3 out", "bn stem_bn",
            "blocks_0/conv1/kernel 2 in", "blocks_0/conv2/kernel 3 out", "bn blocks_0/bn2",
            "blocks_1/conv1/kernel 2 in", "blocks_1/conv2/kernel 3 out", "bn blocks_1/bn2",
            "blocks_2/conv1/kernel 2 in", "blocks_2/proj_conv/kernel 2 in"), -1),
        "blocks_0_mid": _mid(0, 3),
        "blocks_1_mid": _mid(1, 5),
        "blocks_2_mid": _mid(2, 3),
        "blocks_3_mid": _mid(3, 5),
        "stage_1": PermSpec(8, _axes(
            "blocks_2/proj_conv/kernel 3 out", "bn blocks_2/proj_bn",
            "blocks_2/conv2/kernel 3 out", "bn blocks_2/bn2",
            "blocks_3/conv1/kernel 2 in", "blocks_3/conv2/kernel 3 out", "bn blocks_3/bn2",
            "blocks_4/conv1/kernel 2 in", "blocks_4/proj_conv/kernel 2 in"), None),
        "blocks_4_mid": _mid(4, 3),
        "blocks_5_mid": _mid(5, 5),
        "stage_2": PermSpec(8, _axes(
            "blocks_4/proj_conv/kernel 3 out", "bn blocks_4/proj_bn",
            "blocks_4/conv2/kernel 3 out", "bn blocks_4/bn2",
            "blocks_5/conv1/kernel 2 in", "blocks_5/conv2/kernel 3 out", "bn blocks_5/bn2",
            "blocks_6/conv1/kernel 2 in", "blocks_6/proj_conv/kernel 2 in"), None),
        "blocks_6_mid": _mid(6, 3),
        "blocks_7_mid": _mid(7, 5),
        "stage_3": PermSpec(8, _axes(
            "blocks_6/proj_conv/kernel 3 out", "bn blocks_6/proj_bn",
            "blocks_6/conv2/kernel 3 out", "bn blocks_6/bn2",
            "blocks_7/conv1/kernel 2 in", "blocks_7/conv2/kernel 3 out", "bn blocks_7/bn2",
            "out/kernel 0 in"), None),
    }),
}


@pytest.mark.parametrize("kind", sorted(PINNED))
def test_neuron_groups_are_pinned(kind):
  arch, expected = PINNED[kind]
  groups = models.neuron_groups(arch)
  assert list(groups) == list(expected)
  for name, spec in expected.items():
    assert groups[name] == spec, name


# Axes no group carries: the image's channels, the classes, and (for now) the
# CNN's fc neurons (fc's outputs, out's inputs).
UNGROUPED = {
    "mlp": ["hiddens_0/kernel 0", "out/kernel 1", "out/bias 0"],
    "cnn": ["convs_0/kernel 2", "fc/kernel 1", "fc/bias 0", "out/kernel 0", "out/kernel 1",
            "out/bias 0"],
    "resnet18": ["stem_conv/kernel 2", "out/kernel 1", "out/bias 0"],
}


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_groups_cover_every_channel_axis_once(name):
  """Every kernel's in/out channel axes and every bias and BatchNorm leaf are in
  exactly one group, as 'in' (consumer) or 'out', except the UNGROUPED axes."""
  arch, v = ARCHS[name], VARIABLES[name]
  flat = traverse_util.flatten_dict(v, sep="/")
  channel_axes = {(p, ax): "in" if ax == x.ndim - 2 else "out"
                  for p, x in flat.items()
                  for ax in ((x.ndim - 2, x.ndim - 1) if p.endswith("kernel") else (0,))}
  for e in UNGROUPED[arch["kind"]]:
    path, axis = e.split()
    del channel_axes[(f"params/{path}", int(axis))]
  carried = [((a.path, a.axis % flat[a.path].ndim), a.role)
             for spec in models.neuron_groups(arch).values() for a in spec.axes]
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


def test_random_walk_steps_are_ceil_log2_transpositions():
  size, n = 20, 200
  nodes = np.asarray(permutations.random_walk(jax.random.key(0), size, n))
  assert nodes.shape == (n + 1, size)
  np.testing.assert_array_equal(nodes[0], np.arange(size))
  k = permutations.num_swaps(size)
  assert k == 5
  for a, b in zip(nodes[:-1], nodes[1:]):
    assert sorted(b) == list(range(size))  # a permutation
    moved = np.sum(a != b)
    assert moved <= 2 * k  # at most k transpositions
  assert np.mean(np.sum(nodes[1:] != nodes[:-1], axis=1)) > k  # and usually more than one


def test_random_walk_is_seeded():
  a = permutations.random_walk(jax.random.key(7), 16, 50)
  b = permutations.random_walk(jax.random.key(7), 16, 50)
  c = permutations.random_walk(jax.random.key(8), 16, 50)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_random_walk_needs_two_neurons():
  with pytest.raises(ValueError, match="at least 2"):
    permutations.random_walk(jax.random.key(0), 1, 5)
