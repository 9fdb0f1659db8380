"""The barrier engine against Equation 1 evaluated literally, node by node."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_digits

from manifold_metric import barrier, models, permutations

TINY_RESNET = models.default_arch("resnet18", 10, stages=[4, 8, 8, 8], mids=[[4, 4]] * 4)
ARCHS = {
    "mlp": models.default_arch("mlp", 10, hidden=[12, 6]),
    "cnn_one_conv": models.default_arch("cnn", 10, channels=[6], dense=16),
    "cnn_two_convs": models.default_arch("cnn", 10, channels=[6, 5], dense=16),
    "resnet18_bn": TINY_RESNET,
}
N = 5
CHUNKS = (1, 2, N)  # a plain scan, a scan plus a remainder (2 does not divide 5), one vmap


def _quadratic(v):
  return sum(jnp.sum(x ** 2) for x in jax.tree.leaves(v))


def _tree(key):
  ka, kb = jax.random.split(key)
  return {"w": jax.random.normal(ka, (3, 4)), "b": {"c": jax.random.normal(kb, (5,))}}


def test_loss_barrier_is_zero_at_the_ends():
  va, vb = _tree(jax.random.key(0)), _tree(jax.random.key(1))
  np.testing.assert_allclose(barrier.loss_barrier(_quadratic, va, vb, [0.0, 1.0]), 0.0, atol=1e-5)


def test_loss_barrier_of_a_quadratic_has_its_closed_form():
  # L(v) = |v|^2: L(a va + (1-a) vb) - a L(va) - (1-a) L(vb) = -a (1-a) |va - vb|^2,
  # so the midpoint barrier is -|va - vb|^2 / 4.
  va, vb = _tree(jax.random.key(0)), _tree(jax.random.key(1))
  alphas = np.array([0.0, 0.1, 0.5, 0.75, 1.0], np.float32)
  dist = float(_quadratic(jax.tree.map(jnp.subtract, va, vb)))
  got = barrier.loss_barrier(_quadratic, va, vb, alphas)
  np.testing.assert_allclose(got, -alphas * (1 - alphas) * dist, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got[2], -dist / 4, rtol=1e-5)


def test_loss_curve_runs_from_vb_to_va():
  va, vb = _tree(jax.random.key(0)), _tree(jax.random.key(1))
  curve = barrier.loss_curve(_quadratic, va, vb, [0.0, 0.5, 1.0])
  mid = _quadratic(barrier.interpolate(va, vb, 0.5))
  np.testing.assert_allclose(curve, [_quadratic(vb), mid, _quadratic(va)], rtol=1e-6)


def _variables(arch, shape, rng):
  """Random variables of the model's shapes, without compiling its init: fan-in
  scaled kernels, non-zero biases, BatchNorm affine parameters and statistics
  away from their initial values (so that every permuted leaf matters)."""
  shapes = jax.eval_shape(lambda: models.init(arch, jax.random.key(0), shape))

  def draw(path, s):
    name = jax.tree_util.keystr(path)
    if len(s.shape) > 1:
      return rng.normal(0, np.prod(s.shape[:-1]) ** -0.5, s.shape)
    if "var" in name or "scale" in name:
      return 1 + 0.3 * rng.random(s.shape)
    return 0.3 * rng.normal(size=s.shape)

  return jax.tree_util.tree_map_with_path(lambda p, s: jnp.asarray(draw(p, s), s.dtype), shapes)


def _setup(arch, seed=0):
  digits = load_digits()  # real 8x8 images
  x = (digits.images[:16, ..., None] / 16).astype(np.float32)
  y = digits.target[:16].astype(np.int32)
  rng = np.random.default_rng(seed)
  spec = models.first_group(arch)
  walk = jax.jit(permutations.random_walk, static_argnums=(1, 2))
  return (spec, _variables(arch, x.shape[1:], rng), (x, y),
          walk(jax.random.key(seed + 1), spec.size, N))


def _literal(arch, spec, variables, batch, nodes, train):
  """Algorithm 1 as written: permute both nodes, Equation 1 at 0.5, abs."""
  x, y = batch

  def loss(v):
    return models.cross_entropy(models.logits(arch, v, x, train=train), y)

  midpoint_barrier = jax.jit(lambda va, vb: barrier.loss_barrier(loss, va, vb, [0.5])[0])
  out = []
  for pa, pb in zip(nodes[:-1], nodes[1:]):
    va, vb = permutations.permute(spec, variables, pa), permutations.permute(spec, variables, pb)
    out.append(abs(float(midpoint_barrier(va, vb))))
  return np.array(out)


@pytest.mark.parametrize("name", ARCHS)
def test_barrier_set_equals_the_literal_algorithm(name):
  arch = ARCHS[name]
  spec, variables, batch, nodes = _setup(arch)
  want = _literal(arch, spec, variables, batch, nodes, train=models.has_batch_norm(arch))
  assert want.min() > 1e-4  # no pair is trivially connected
  for chunk in CHUNKS:
    got = barrier.barrier_set(models.probe(arch), spec, variables, batch, nodes, chunk=chunk)
    assert got.shape == (N,)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=2e-6, err_msg=f"chunk={chunk}")
  if models.has_batch_norm(arch):
    # The midpoint's BatchNorm statistics are re-estimated on the batch:
    # the running averages give other barriers.
    stale = _literal(arch, spec, variables, batch, nodes, train=False)
    assert np.max(np.abs(stale - want)) > 100 * 2e-6 + 1e-3 * np.max(want)


def test_steps_lead_from_each_node_to_the_next():
  nodes = np.asarray(permutations.random_walk(jax.random.key(4), 9, 20))
  theta = np.arange(100, 109)  # one leaf, the group on its only axis
  for i, sigma in enumerate(barrier.steps(nodes)):
    np.testing.assert_array_equal(theta[sigma][nodes[i]], theta[nodes[i + 1]])


def test_loop_length_covers_the_distinct_steps_with_few_lengths():
  lengths = {barrier._loop_length(u, 1000) for u in range(1, 1001)}
  assert all(u <= barrier._loop_length(u, 1000) <= min(1000, u + 63) for u in range(1, 1001))
  assert len(lengths) <= 7 + 1000 // 64 + 1  # powers of two to 64, multiples of 64, n


def test_pairs_with_the_same_step_share_one_barrier():
  """A walk that swaps the same two neurons back and forth: one distinct step,
  so every pair gets the literal barrier of the first pair."""
  arch = ARCHS["cnn_two_convs"]
  spec, variables, batch, _ = _setup(arch)
  swap = np.arange(spec.size)
  swap[[0, 1]] = [1, 0]
  nodes = np.stack([np.arange(spec.size), swap] * 3)
  want = _literal(arch, spec, variables, batch, nodes[:2], train=False)
  got = barrier.barrier_set(models.probe(arch), spec, variables, batch, nodes)
  assert want[0] > 1e-4
  np.testing.assert_allclose(got, np.full(len(nodes) - 1, want[0]), rtol=1e-3)


@pytest.mark.parametrize("name", ["cnn_two_convs", "resnet18_bn"])
def test_barrier_set_of_identical_nodes_is_zero(name):
  arch = ARCHS[name]
  spec, variables, batch, nodes = _setup(arch)
  probe = models.probe(arch)
  for node in (nodes[0], nodes[-1]):  # the identity, and a permutation of it
    same = jnp.tile(node, (N + 1, 1))
    np.testing.assert_allclose(barrier.barrier_set(probe, spec, variables, batch, same, chunk=2),
                               0.0, atol=2e-6)


def test_barrier_set_is_deterministic():
  arch = ARCHS["cnn_two_convs"]
  spec, variables, batch, nodes = _setup(arch)
  probe = models.probe(arch)
  first = np.asarray(barrier.barrier_set(probe, spec, variables, batch, nodes, chunk=2))
  again = np.asarray(barrier.barrier_set(probe, spec, variables, batch, nodes, chunk=2))
  np.testing.assert_array_equal(first, again)


def test_barrier_set_rejects_nodes_of_another_group():
  arch = ARCHS["mlp"]
  spec, variables, batch, nodes = _setup(arch)
  with pytest.raises(ValueError, match=r"\(n \+ 1, 12\)"):
    barrier.barrier_set(models.probe(arch), spec, variables, batch, nodes[:, :6])
  with pytest.raises(ValueError, match="n >= 1"):
    barrier.barrier_set(models.probe(arch), spec, variables, batch, nodes[:1])


def test_default_chunk_is_a_plain_scan_on_cpu():
  assert barrier.default_chunk("cpu") == 1
  assert barrier.default_chunk("gpu") > 1
