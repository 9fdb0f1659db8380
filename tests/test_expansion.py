import jax
import jax.numpy as jnp
import numpy as np
import pytest

from manifold_metric import expansion, models, permutations

SMALL_RESNET = {"stages": [8, 16, 16, 32], "mids": [[8, 8], [16, 16], [16, 16], [32, 32]]}
X = jax.random.normal(jax.random.key(1), (16, 8, 8, 3))
Y = jax.random.randint(jax.random.key(2), (16,), 0, 10)
CASES = [
    ("mlp", {}, {"kind": "widen_first", "factor": 2}),
    ("mlp", {}, {"kind": "widen_first", "width": 33}),
    ("mlp", {"hidden": [20, 12]}, {"kind": "widen_all", "factor": 1.5}),
    ("mlp", {}, {"kind": "deepen", "after": 0, "count": 2}),
    ("cnn", {}, {"kind": "widen_first", "width": 24}),
    ("cnn", {"channels": [8]}, {"kind": "widen_first", "factor": 3}),
    ("cnn", {"channels": [16, 64, 64, 64]}, {"kind": "widen_all", "factor": 1.25}),
    ("cnn", {"channels": [16, 64, 64, 64]}, {"kind": "deepen", "after": 2, "count": 2}),
    ("cnn", {}, {"kind": "widen_first", "width": 24, "split": "uniform"}),
    ("resnet18", SMALL_RESNET, {"kind": "widen_first", "factor": 2}),
    ("resnet18", SMALL_RESNET, {"kind": "widen_all", "factor": 1.5}),
]


def _model(kind, sizes):
  arch = models.default_arch(kind, 10, **sizes)
  v = models.init(arch, jax.random.key(0), X.shape[1:])
  if "batch_stats" in v:
    v["batch_stats"] = jax.tree.map(
        lambda a: a + jax.random.uniform(jax.random.key(3), a.shape), v["batch_stats"])
  return arch, v


@pytest.mark.parametrize("kind,sizes,spec", CASES)
def test_expansion_preserves_function(kind, sizes, spec):
  arch, v = _model(kind, sizes)
  new_arch, new_v = expansion.expand(arch, v, spec, jax.random.key(4))
  assert jax.tree.structure(new_v) == jax.tree.structure(
      models.init(new_arch, jax.random.key(0), X.shape[1:]))
  for train in (False, True):
    a, b = models.logits(arch, v, X, train), models.logits(new_arch, new_v, X, train)
    assert jnp.abs(a - b).max() < 2e-5 * max(1.0, float(jnp.abs(a).max()))
  np.testing.assert_array_equal(jnp.argmax(models.logits(arch, v, X), -1),
                                jnp.argmax(models.logits(new_arch, new_v, X), -1))


def test_widen_sizes_and_replication():
  arch, v = _model("cnn", {})
  new_arch, new_v = expansion.expand(arch, v, {"kind": "widen_first", "width": 12},
                                     jax.random.key(0))
  assert new_arch["channels"] == [12, 32]
  old_k, new_k = v["params"]["convs_0"]["kernel"], new_v["params"]["convs_0"]["kernel"]
  np.testing.assert_array_equal(new_k[..., :8], old_k)
  # Each new channel copies an old one exactly (producers are copied, not divided).
  for c in range(8, 12):
    assert any(np.array_equal(new_k[..., c], old_k[..., j]) for j in range(8))


def test_batch_norm_copied_per_replicated_channel():
  arch, v = _model("resnet18", SMALL_RESNET)
  new_arch, new_v = expansion.expand(arch, v, {"kind": "widen_first", "width": 12},
                                     jax.random.key(0))
  old = v["batch_stats"]["stem_bn"]["mean"]
  new = new_v["batch_stats"]["stem_bn"]["mean"]
  assert new.shape == (12,)
  assert all(np.any(np.isclose(new[c], old)) for c in range(12))


def test_division_only_at_consumer():
  """Replicas' consumer rows sum to the original row; producers untouched."""
  arch, v = _model("mlp", {})
  spec = models.first_group(arch)
  g = expansion.replication_map(jax.random.key(1), 20, 40)
  f = expansion.shares(jax.random.key(2), g, 20, "random")
  np.testing.assert_allclose(jax.ops.segment_sum(f, g, num_segments=20), 1.0, rtol=1e-6)
  new_v = expansion.widen(spec, v, 40, jax.random.key(0))
  w_out, new_out = v["params"]["out"]["kernel"], new_v["params"]["out"]["kernel"]
  gg = expansion.replication_map(jax.random.split(jax.random.key(0))[0], 20, 40)
  summed = jax.ops.segment_sum(new_out, gg, num_segments=20)
  np.testing.assert_allclose(summed, w_out, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(new_v["params"]["hiddens_0"]["bias"],
                                v["params"]["hiddens_0"]["bias"][gg])


def test_uniform_split_divides_by_count():
  g = jnp.array([0, 1, 0, 0])
  np.testing.assert_allclose(expansion.shares(None, g, 2, "uniform"), [1 / 3, 1, 1 / 3, 1 / 3])


def test_widened_model_still_permutation_invariant():
  arch, v = _model("cnn", {})
  new_arch, new_v = expansion.expand(arch, v, {"kind": "widen_first", "width": 16},
                                     jax.random.key(0))
  spec = models.first_group(new_arch)
  assert spec.size == 16
  vp = permutations.permute(spec, new_v, jax.random.permutation(jax.random.key(5), 16))
  assert jnp.abs(models.logits(new_arch, vp, X) - models.logits(new_arch, new_v, X)).max() < 1e-5


@pytest.mark.parametrize("spec,match", [
    ({"kind": "widen_first", "width": 4}, "smaller"),
    ({"kind": "widen_first"}, "exactly one"),
    ({"kind": "deepen", "after": 5}, "outside"),
    ({"kind": "shrink"}, "unknown expansion"),
])
def test_bad_expansions_are_named(spec, match):
  arch, v = _model("cnn", {})
  with pytest.raises(ValueError, match=match):
    expansion.expand(arch, v, spec, jax.random.key(0))
