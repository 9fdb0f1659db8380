import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from manifold_metric import models, permutations

SMALL_RESNET = {"stages": [8, 16, 16, 32], "mids": [[8, 8], [16, 16], [16, 16], [32, 32]]}
ARCHS = {
    "mlp": models.default_arch("mlp", 10),
    "cnn": models.default_arch("cnn", 10),
    "cnn_flatten": models.default_arch("cnn", 10, channels=[8]),
    "resnet18": models.default_arch("resnet18", 10, **SMALL_RESNET),
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
