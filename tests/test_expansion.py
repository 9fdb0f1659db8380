"""Net2Net expansions: every step kind, and sequences of them, preserve the
function of MLPs, CNNs, ResNet18 and BERT; one model per seed; replication
and division; and identity layers leave the barriers of every group alone."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_digits

from manifold_metric import (
    archs,
    barrier,
    bert,
    expansion,
    image_models,
    permutations,
    probe,
    walks,
)

X = np.asarray(jax.random.normal(jax.random.key(1), (8, 8, 8, 3)))
IDS = np.asarray(jax.random.randint(jax.random.key(2), (4, 12), 3, 50))
BERT_ARCH = archs.BERT(layers=2, hidden=16, heads=2, ffn=(24, 20), vocab_size=50, max_len=16)
# One block per stage (halves compile time); stages 1-3 still project.
SMALL_RESNET = {"stages": [8, 16, 16, 32], "mids": [[8], [16], [16], [32]]}
# Every step kind, in sequences too, on each model (the BERT cases are below).
CASES = [
    (
        "mlp",
        {"hidden": [8, 6, 5]},
        {
            "steps": [
                {"kind": "widen", "layer": 0, "width": 12},
                {"kind": "deepen", "after": 1, "count": 1},
                {"kind": "widen", "layer": 1, "factor": 2},
                {"kind": "widen_all", "factor": 1.25},
            ]
        },
    ),
    ("mlp", {}, {"kind": "deepen", "after": 0, "count": 2}),
    ("cnn", {"channels": [8]}, {"kind": "widen_first", "factor": 3}),  # fc reads pixels x channels
    ("cnn", {"channels": [8, 16]}, {"kind": "deepen", "after": 1}),  # after the last conv
    (
        "cnn",
        {"channels": [8, 16]},
        {
            "steps": [
                {"kind": "deepen", "after": 0, "count": 1},
                {"kind": "widen", "layer": 1, "width": 12},
                {"kind": "widen_all", "factor": 1.5},
            ],
            "split": "uniform",
        },
    ),
    ("resnet18", SMALL_RESNET, {"kind": "widen_all", "factor": 1.5}),  # every stream and block
]


def _arch(kind, **sizes):
  return archs.with_data(archs.make({"kind": kind, **sizes}), num_classes=10)


def _shapes(arch):
  if archs.is_lm(arch):
    return jax.eval_shape(lambda: bert.init(arch, jax.random.key(0)))
  return jax.eval_shape(lambda: image_models.init(arch, jax.random.key(0), X.shape[1:]))


def _variables(arch, seed=0):
  """Random variables of the model's shapes (compiling Flax's initializers is
  slow): fan-in scaled kernels, nonzero biases, BatchNorm statistics away from
  0 and 1, so that every replicated leaf matters."""
  rng = np.random.default_rng(seed)

  def draw(path, s):
    name = jax.tree_util.keystr(path)
    if len(s.shape) > 1:
      return rng.normal(0, np.prod(s.shape[:-1]) ** -0.5, s.shape)
    if "var" in name or "scale" in name:
      return rng.uniform(0.5, 1.5, s.shape)
    return 0.2 * rng.normal(size=s.shape)

  return jax.tree_util.tree_map_with_path(
      lambda p, s: np.asarray(draw(p, s), s.dtype), _shapes(arch)
  )


@functools.partial(jax.jit, static_argnames=("arch", "train"))
def _logits(arch, v, x, train=False):
  if archs.is_lm(arch):
    return bert.build(arch).apply(v, x)
  return image_models.apply(arch, v, x, train=train)


def _assert_same_function(arch, v, new_arch, new_v, x, trains=(False,)):
  """Logits equal to float32 rounding (the sums are reordered and split), and
  the same predictions."""
  for train in trains:
    a, b = _logits(arch, v, x, train), _logits(new_arch, new_v, x, train)
    assert float(jnp.abs(a).max()) > 0.1  # not vacuous
    np.testing.assert_allclose(
        b, a, rtol=0, atol=2e-5 * max(1.0, float(jnp.abs(a).max())), err_msg=f"train={train}"
    )
    np.testing.assert_array_equal(jnp.argmax(a, -1), jnp.argmax(b, -1))


def _structure(tree):
  return jax.tree.map(lambda a: (a.shape, a.dtype), tree)


@pytest.mark.parametrize("kind,sizes,spec", CASES)
def test_expansion_preserves_function(kind, sizes, spec):
  arch = _arch(kind, **sizes)
  v = _variables(arch)
  new_arch, new_v = expansion.expand(arch, v, spec, 4)
  assert new_arch == archs.expanded(arch, spec)[0] != arch
  assert _structure(new_v) == _structure(_shapes(new_arch))
  _assert_same_function(
      arch, v, new_arch, new_v, X, (False, True) if image_models.has_batch_norm(arch) else (False,)
  )


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "widen_ffn", "factor": 2},
        {"steps": [{"kind": "widen", "layer": 1, "width": 33}]},  # one layer only
        {
            "steps": [
                {"kind": "widen_all", "factor": 1.25},  # the FFNs, never the heads
                {"kind": "widen", "layer": 0, "width": 40},
            ],
            "split": "uniform",
        },
    ],
)
def test_bert_expansion_preserves_function(spec):
  v = _variables(BERT_ARCH)
  new_arch, new_v = expansion.expand(BERT_ARCH, v, spec, 5)
  assert new_arch == archs.expanded(BERT_ARCH, spec)[0]
  assert new_arch.heads == BERT_ARCH.heads and new_arch.hidden == BERT_ARCH.hidden
  assert _structure(new_v) == _structure(_shapes(new_arch))
  for i, width in enumerate(new_arch.ffn):
    assert new_v["params"][f"layers_{i}"]["ffn_in"]["kernel"].shape == (16, width)
    assert new_v["params"][f"layers_{i}"]["ffn_out"]["kernel"].shape == (width, 16)
  _assert_same_function(BERT_ARCH, v, new_arch, new_v, IDS)


def test_bert_expansion_changes_only_the_widened_layers():
  v = _variables(BERT_ARCH)
  spec = {"steps": [{"kind": "widen", "layer": 1, "width": 33}]}
  _, new_v = expansion.expand(BERT_ARCH, v, spec, 5)
  old, new = v["params"], new_v["params"]
  for leaf in ("ffn_in", "ffn_out"):
    np.testing.assert_array_equal(new["layers_0"][leaf]["kernel"], old["layers_0"][leaf]["kernel"])
  np.testing.assert_array_equal(
      new["layers_1"]["ffn_in"]["kernel"][:, :20], old["layers_1"]["ffn_in"]["kernel"]
  )


def test_expand_seeds_is_expand_of_each_seed_with_its_seed():
  """A seed's expansion does not depend on the other seeds of the stack."""
  arch = _arch("cnn", channels=[4, 6])
  spec = {
      "steps": [
          {"kind": "widen", "layer": 0, "width": 7},
          {"kind": "deepen", "after": 0, "count": 1},
          {"kind": "widen_all", "factor": 1.5},
      ]
  }
  seeds = [3, 0, 11]
  models = [_variables(arch, s) for s in range(3)]
  stacked = jax.tree.map(lambda *a: np.stack(a), *models)
  new_arch, got = expansion.expand_seeds(arch, stacked, spec, seeds)
  assert new_arch == archs.expanded(arch, spec)[0]
  for i, (seed, v) in enumerate(zip(seeds, models)):
    want_arch, want = expansion.expand(arch, v, spec, seed)
    assert want_arch == new_arch
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_array_equal(np.asarray(a)[i], b)
  # Seeds draw different replicas.
  first = archs.first_group(arch)
  kernel = np.asarray(got["params"][first]["kernel"])
  assert not np.array_equal(kernel[0], kernel[1])


def test_step_i_group_j_of_seed_s_draws_from_generator_s_i_j():
  """Step i widens its groups in order, group j with the replicas and shares
  of numpy's generator [s, i, j]: the sequence is the literal chain of
  `widen` calls."""
  arch = _arch("mlp", hidden=[6, 4])
  v = jax.tree.map(lambda a: a[None], _variables(arch))
  spec = {
      "steps": [{"kind": "widen", "layer": 1, "width": 7}, {"kind": "widen_all", "factor": 1.5}]
  }
  _, got = expansion.expand_seeds(arch, v, spec, [7])
  groups = lambda a: image_models.neuron_groups(a)

  def step(spec, v, new, i, j):
    rng = np.random.default_rng([7, i, j])
    g = expansion.replication_map(rng, spec.size, new)
    return expansion.widen(spec, v, g[None], expansion.shares(rng, g, spec.size)[None])

  want = step(groups(arch)["hiddens_1"], v, 7, 0, 0)
  want = step(groups(archs.MLP((6, 7), 10))["hiddens_0"], want, 9, 1, 0)
  want = step(groups(archs.MLP((9, 7), 10))["hiddens_1"], want, 11, 1, 1)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(a, b)


def test_widen_sizes_and_replication():
  arch = _arch("cnn")
  v = _variables(arch)
  new_arch, new_v = expansion.expand(arch, v, {"kind": "widen_first", "width": 12}, 0)
  assert new_arch.channels == (12, 32)
  old_k, new_k = v["params"]["convs_0"]["kernel"], new_v["params"]["convs_0"]["kernel"]
  np.testing.assert_array_equal(new_k[..., :8], old_k)
  # Each new channel copies an old one exactly (producers are copied, not divided).
  for c in range(8, 12):
    assert any(np.array_equal(new_k[..., c], old_k[..., j]) for j in range(8))


def test_batch_norm_copied_per_replicated_channel():
  arch = _arch("resnet18", **SMALL_RESNET)
  v = _variables(arch)
  _, new_v = expansion.expand(arch, v, {"kind": "widen_first", "width": 12}, 0)
  for leaf in ("mean", "var"):
    old = v["batch_stats"]["stem_bn"][leaf]
    new = np.asarray(new_v["batch_stats"]["stem_bn"][leaf])
    assert new.shape == (12,)
    np.testing.assert_array_equal(new[:8], old)
    assert all(new[c] in old for c in range(8, 12))


def test_division_only_at_consumer():
  """Replicas' consumer rows sum to the original row; producers untouched."""
  arch = _arch("mlp")
  v = jax.tree.map(lambda a: a[None], _variables(arch))
  spec = probe.spec(arch)
  rng = np.random.default_rng(1)
  g = expansion.replication_map(rng, 20, 40)
  f = expansion.shares(rng, g, 20, "random")
  np.testing.assert_allclose(np.bincount(g, f, minlength=20), 1.0, rtol=1e-12)
  assert f.min() > 0 and len(np.unique(f)) > 20  # random shares
  new_v = expansion.widen(spec, v, g[None], f[None])
  w_out, new_out = v["params"]["out"]["kernel"][0], new_v["params"]["out"]["kernel"][0]
  summed = np.stack([new_out[g == i].sum(0) for i in range(20)])
  np.testing.assert_allclose(summed, w_out, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(
      new_v["params"]["hiddens_0"]["bias"][0], v["params"]["hiddens_0"]["bias"][0][g]
  )
  np.testing.assert_array_equal(
      new_v["params"]["hiddens_0"]["kernel"][0], v["params"]["hiddens_0"]["kernel"][0][:, g]
  )


def test_uniform_split_divides_by_count():
  g = np.array([0, 1, 0, 0])
  np.testing.assert_allclose(expansion.shares(None, g, 2, "uniform"), [1 / 3, 1, 1 / 3, 1 / 3])
  with pytest.raises(ValueError, match="unknown split 'half'"):
    expansion.shares(None, g, 2, "half")
  with pytest.raises(ValueError, match="cannot widen 4 neurons to 3"):
    expansion.replication_map(np.random.default_rng(0), 4, 3)


def test_deepen_inserts_identity_layers():
  arch = _arch("cnn", channels=[4, 6])
  v = jax.tree.map(lambda *a: np.stack(a), _variables(arch, 0), _variables(arch, 1))
  new_arch, new_v = expansion.deepen(arch, v, after=0, count=2)
  assert new_arch.channels == (4, 4, 4, 6)
  p = new_v["params"]
  for i in (1, 2):
    k = np.asarray(p[f"convs_{i}"]["kernel"])
    assert k.shape == (2, 3, 3, 4, 4) and (k[:, 1, 1] == np.eye(4)).all() and k.sum() == 8
    assert (np.asarray(p[f"convs_{i}"]["bias"]) == 0).all()
  np.testing.assert_array_equal(p["convs_3"]["kernel"], v["params"]["convs_1"]["kernel"])
  np.testing.assert_array_equal(p["fc"]["kernel"], v["params"]["fc"]["kernel"])


def test_widened_model_still_permutation_invariant():
  arch = _arch("cnn")
  v = _variables(arch)
  new_arch, new_v = expansion.expand(arch, v, {"kind": "widen_first", "width": 16}, 0)
  spec = probe.spec(new_arch)
  assert spec.size == 16
  vp = permutations.permute(spec, new_v, jax.random.permutation(jax.random.key(5), 16))
  assert jnp.abs(_logits(new_arch, vp, X) - _logits(new_arch, new_v, X)).max() < 1e-5


@pytest.mark.parametrize(
    "spec,match",
    [
        ({"kind": "widen_first", "width": 4}, "smaller"),
        ({"kind": "widen_first"}, "exactly one"),
        ({"kind": "deepen", "after": 5}, "outside"),
        ({"kind": "shrink"}, "unknown expansion"),
    ],
)
def test_bad_expansions_are_named(spec, match):
  arch = _arch("cnn")
  with pytest.raises(ValueError, match=match):
    expansion.expand(arch, _variables(arch), spec, 0)


# ---------------------------------------------------- identity layers and the barriers

N = 40


def _deepened_barriers(kind, sizes, spec, groups=None):
  """{base group: (barriers of the base, of the expanded candidate, the base's
  tau)} on the same batch along the same walk, for `groups` (default: every
  group of the base)."""
  digits = load_digits()
  x = (digits.images[:64, ..., None] / 16).astype(np.float32)
  batch = (x, digits.target[:64].astype(np.int32))
  arch = _arch(kind, **sizes)
  shapes = jax.eval_shape(lambda: image_models.init(arch, jax.random.key(0), x.shape[1:]))
  rng = np.random.default_rng(0)
  v = jax.tree.map(
      lambda s: np.asarray(
          rng.normal(0, np.prod(s.shape[:-1]) ** -0.5 if len(s.shape) > 1 else 0.3, s.shape),
          s.dtype,
      ),
      shapes,
  )
  new_arch, new_v = expansion.expand(arch, v, spec, 0)
  _, lineage = archs.expanded(arch, spec)
  stack = lambda t: jax.tree.map(lambda a: np.asarray(a)[None], t)
  out = {}
  for group, size in arch.groups().items():
    if groups is not None and group not in groups:
      continue
    nodes = walks.seed_walks([5], size, N)
    base, tau = barrier.barrier_sets(
        probe.probe(arch, group),
        probe.spec(arch, group),
        stack(v),
        stack(batch),
        nodes,
        with_resolution=True,
    )
    deep = barrier.barrier_sets(
        probe.probe(new_arch, lineage[group]),
        probe.spec(new_arch, lineage[group]),
        stack(new_v),
        stack(batch),
        nodes,
    )
    assert np.median(base) > 100 * tau[0], group  # not vacuous: far above the resolution
    out[group] = (base, deep, float(tau[0]))
  return out


@pytest.mark.parametrize(
    "kind,sizes,spec",
    [
        ("mlp", {"hidden": [8, 6]}, {"kind": "deepen", "after": 0, "count": 1}),
        ("mlp", {"hidden": [8, 6]}, {"kind": "deepen", "after": 1, "count": 1}),  # after the last
        ("cnn", {"channels": [6, 5]}, {"kind": "deepen", "after": 0, "count": 2}),
    ],
)
def test_identity_layers_leave_every_groups_barriers_unchanged(kind, sizes, spec):
  """A deepened candidate, probed on the same batch along the same walk, has the
  barriers of its base in every group of the base (followed through the lineage):
  the midpoint of the permuted group feeds the identity layer (I + P) / 2, whose
  output is non-negative, so relu passes it and the next layer sees what the
  base's averaged consumer (W + P W) / 2 gives. Equal up to float32 rounding,
  bounded by the engine's resolution."""
  for group, (base, deep, tau) in _deepened_barriers(kind, sizes, spec).items():
    assert np.abs(deep - base).max() <= tau, (group, np.abs(deep - base).max(), tau)


@pytest.mark.parametrize(
    "kind,sizes,spec,group",
    [
        (
            "mlp",
            {"hidden": [8, 6]},
            {"steps": [{"kind": "widen", "layer": 1, "width": 11}]},
            "hiddens_0",
        ),
        (
            "mlp",
            {"hidden": [8, 6, 4]},
            {
                "steps": [
                    {"kind": "widen", "layer": 0, "width": 12},
                    {"kind": "widen", "layer": 2, "width": 9},
                ]
            },
            "hiddens_1",
        ),
        (
            "cnn",
            {"channels": [6, 5]},
            {"steps": [{"kind": "widen", "layer": 1, "width": 9}]},
            "convs_0",
        ),
    ],
)
def test_widening_other_layers_leaves_a_groups_barriers_unchanged(kind, sizes, spec, group):
  """Net2Net widening of another layer replicates and divides weights on axes
  the group's permutation does not touch: the expanded midpoint is the
  midpoint expanded, the same function, the same barrier (README, "What M
  sees"; why M_0 sees only the permuted layer's width)."""
  base, wide, tau = _deepened_barriers(kind, sizes, spec, [group])[group]
  assert np.abs(wide - base).max() <= tau, (np.abs(wide - base).max(), tau)


def test_an_identity_conv_ahead_of_the_max_pool_changes_the_barriers_of_the_conv_before_it():
  """The exception to the above (README, "What M sees"): an identity conv
  after a CNN's last conv sits ahead of the max-pool, and max-pooling the
  mixed channels is not mixing the pooled ones, so the last conv's barriers
  change although the function is preserved."""
  out = _deepened_barriers("cnn", {"channels": [6, 5]}, {"kind": "deepen", "after": 1})
  base, deep, tau = out["convs_1"]
  assert np.abs(deep - base).max() > 100 * tau
