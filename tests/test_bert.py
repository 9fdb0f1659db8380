"""BERT for masked language modelling: shapes, the tied projection, the MLM
loss, the stem/head split, permutations of FFN neurons and heads, and the
probe's barriers against Algorithm 1 evaluated literally."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from manifold_metric import archs, barrier, bert, permutations, probe, study, text, tracks, walks

DATA = study.bundled_dir("wikitext")  # the real text shipped with the package
VOCAB, SEQ = 2000, 32
ARCH = archs.BERT(layers=2, hidden=32, heads=2, ffn=(64, 48), vocab_size=VOCAB, max_len=64)
MASK = jax.jit(text.mask_tokens, static_argnames=("vocab_size", "rate", "special_ids"))


@pytest.fixture(scope="module")
def data():
  """(train, eval) sequences: WikiText valid for training, test for evaluation."""
  train = text.read_split(DATA, "valid")
  vocab = text.build_vocab(train, VOCAB)
  return (
      text.sequences(text.encode(train, vocab), SEQ),
      text.sequences(text.encode(text.read_split(DATA, "test"), vocab), SEQ),
  )


@pytest.fixture(scope="module")
def batch(data):
  return tuple(np.asarray(a) for a in MASK(jax.random.key(3), data[0][:8], VOCAB, rate=0.3))


def _init_like(arch, rng):
  """BERT's initialisation drawn in numpy: N(0, 0.02) kernels and embeddings,
  zero biases, unit LayerNorm scales."""
  shapes = jax.eval_shape(lambda: bert.init(arch, jax.random.key(0)))

  def draw(path, s):
    name = jax.tree_util.keystr(path)
    if "scale" in name:
      return np.ones(s.shape)
    if "bias" in name:
      return np.zeros(s.shape)
    return rng.normal(0, 0.02, s.shape)

  return jax.tree_util.tree_map_with_path(lambda p, s: np.asarray(draw(p, s), s.dtype), shapes)


@pytest.fixture(scope="module")
def variables():
  """Initial parameters moved by noise, so that biases are non-zero and the
  midpoints of permuted copies clearly leave the minimum (barriers ~0.01-0.1)."""
  rng = np.random.default_rng(1)
  return jax.tree.map(
      lambda x: x + 0.3 * rng.normal(size=x.shape).astype(np.float32), _init_like(ARCH, rng)
  )


@functools.cache
def _fns(arch):
  """Jitted (logits, MLM loss) for one arch."""

  def f(v, b):
    out = bert.build(arch).apply(v, b[0])
    return out, bert.mlm_loss(out, b[1], b[2])

  return jax.jit(f)


def test_forward_shapes(variables, batch):
  assert _fns(ARCH)(variables, batch)[0].shape == (8, SEQ, VOCAB)
  p = variables["params"]
  assert p["layers_0"]["attention"]["query"]["kernel"].shape == (32, 2, 16)
  assert p["layers_0"]["attention"]["out"]["kernel"].shape == (2, 16, 32)
  assert p["layers_1"]["ffn_in"]["kernel"].shape == (32, 48)
  assert p["positions"].shape == (64, 32) and "mlm_bias" in p
  # Tied output projection: no separate (hidden, vocab) decoder matrix.
  sizes = [x.size for x in jax.tree.leaves(p)]
  assert VOCAB * 32 in sizes and sizes.count(VOCAB * 32) == 1


def test_init_is_near_uniform(batch):
  small = archs.BERT(layers=1, hidden=16, heads=2, ffn=(16,), vocab_size=VOCAB, max_len=SEQ)
  fresh = jax.jit(bert.init, static_argnums=0)(small, jax.random.key(0))
  assert abs(float(_fns(small)(fresh, batch)[1]) - np.log(VOCAB)) < 0.5
  kernel = np.asarray(fresh["params"]["layers_0"]["ffn_in"]["kernel"])
  assert kernel.std() == pytest.approx(0.02, rel=0.1)  # BERT's initializer range
  with pytest.raises(ValueError, match="has no vocab_size: see archs.with_data"):
    bert.build(archs.make({"kind": "bert"}))


def test_longer_inputs_than_max_len_are_refused(variables):
  ids = np.zeros((1, 65), np.int32)
  with pytest.raises(ValueError, match="sequence length 65 exceeds max_len 64"):
    bert.build(ARCH).apply(variables, ids)


def test_mlm_loss_counts_only_weighted_positions():
  logits = np.random.default_rng(0).normal(size=(2, 5, 7)).astype(np.float32)
  labels = np.arange(10).reshape(2, 5) % 7
  weights = np.array([[1, 0, 0, 1, 0], [0, 0, 1, 0, 0]], np.float32)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  ce = -logp[np.arange(2)[:, None], np.arange(5), labels]
  want = (ce[0, 0] + ce[0, 3] + ce[1, 2]) / 3
  np.testing.assert_allclose(jax.jit(bert.mlm_loss)(logits, labels, weights), want, rtol=1e-6)


def test_the_loss_at_the_masked_positions_is_the_loss_of_every_position(variables, batch):
  module, (inputs, labels, weights) = bert.build(ARCH), batch
  full = bert.mlm_loss(module.apply(variables, inputs), labels, weights)
  count = int(weights.sum())
  for capacity in (count, bert.mask_capacity(weights.size, rate=0.3)):
    positions, w = jax.jit(bert.masked_positions, static_argnums=1)(weights, capacity)
    assert positions.shape == (capacity,) and float(w.sum()) == count
    masked = bert.mlm_loss(
        module.apply(variables, inputs, positions), labels.reshape(-1)[positions], w
    )
    np.testing.assert_allclose(masked, full, rtol=1e-6)
  # The training track's loss is the same.
  loss, _ = jax.jit(functools.partial(tracks.LM.train_loss, ARCH))(variables, batch)
  np.testing.assert_allclose(loss, full, rtol=1e-6)


def test_more_masked_positions_than_room_make_the_loss_nan(variables, batch):
  inputs, labels, weights = batch
  positions, w = bert.masked_positions(weights, int(weights.sum()) - 1)
  logits = bert.build(ARCH).apply(variables, inputs, positions)
  assert np.isnan(bert.mlm_loss(logits, labels.reshape(-1)[positions], w))


def test_mask_capacity_is_ten_standard_deviations_above_the_mean():
  assert bert.mask_capacity(512) == 158  # 76.8 + 10 * 8.08
  assert bert.mask_capacity(4) == 4  # never more than the batch
  # The bound holds: no batch of the real masking comes near it.
  counts = [
      int(MASK(jax.random.key(k), np.full((16, 32), 5, np.int32), VOCAB)[2].sum())
      for k in range(50)
  ]
  assert max(counts) < 76.8 + 5 * 8.08


def test_stem_head_compose(variables, batch):
  module = bert.build(ARCH)
  ids = batch[0]
  want = _fns(ARCH)(variables, batch)[0]

  @jax.jit
  def split(v, ids):
    outs = [module.apply(v, module.apply(v, ids, method="embed"), method="encode")]
    for layer in range(ARCH.layers):
      z = module.apply(v, ids, layer=layer, method="stem")
      assert z.shape == (*ids.shape, ARCH.ffn[layer])
      outs.append(module.apply(v, z, ids, layer=layer, method="head"))
    return outs

  for got in split(variables, ids):
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("group", ["ffn_0", "ffn_1", "heads_0"])
def test_permutation_preserves_logits(variables, batch, group):
  spec = bert.neuron_groups(ARCH)[group]
  permutations.check(spec, variables)
  perm = (
      jnp.array([1, 0]) if spec.size == 2 else jax.random.permutation(jax.random.key(1), spec.size)
  )
  assert not np.array_equal(perm, np.arange(spec.size))
  permuted = permutations.permute(spec, variables, perm)
  for path in spec.paths:
    assert not np.allclose(permutations.get(permuted, path), permutations.get(variables, path))
  np.testing.assert_allclose(
      _fns(ARCH)(permuted, batch)[0], _fns(ARCH)(variables, batch)[0], atol=5e-5
  )


def test_neuron_groups_and_specs():
  groups = bert.neuron_groups(ARCH)
  assert list(groups) == list(ARCH.groups()) == ["ffn_0", "ffn_1", "heads_0"]
  assert groups["ffn_0"].size == 64 and groups["ffn_1"].size == 48
  assert groups["heads_0"].size == 2
  assert all(a.role == "out" for a in groups["heads_0"].axes)
  assert [a.role for a in groups["ffn_1"].axes] == ["out", "out", "in"]
  assert probe.spec(ARCH, "heads_0").stem_axis is None
  assert probe.spec(ARCH, "ffn_1").stem_axis == -1
  # Equal architectures are one cache key: the same probe.
  same = archs.from_dict(archs.to_dict(ARCH))
  assert probe.probe(ARCH, "heads_0") is probe.probe(same, "heads_0")
  with pytest.raises(ValueError, match="bert has no neuron group 'heads_1'"):
    probe.spec(ARCH, "heads_1")


def _probe_batch(batch):
  """`bert.probe_batches` of one masked batch, without the seed axis."""
  return tuple(a[0] for a in bert.probe_batches(tuple(np.asarray(a)[None] for a in batch)))


@pytest.mark.parametrize("group", ["ffn_0", "ffn_1", "heads_0"])
def test_probe_loss_is_the_mlm_loss(variables, batch, group):
  """The probe scores the masked positions only: the same loss as full logits."""
  p, pb = probe.probe(ARCH, group), _probe_batch(batch)
  assert 0 < len(pb[1]) < batch[0].size
  got = jax.jit(p.loss)(variables, pb)
  np.testing.assert_allclose(got, _fns(ARCH)(variables, batch)[1], rtol=1e-5)


def test_probe_batches_hold_the_masked_positions_of_each_seed(batch):
  other = tuple(np.asarray(a) for a in MASK(jax.random.key(4), batch[1], VOCAB, rate=0.3))
  inputs, positions, labels, weights = bert.probe_batches(
      tuple(np.stack([a, b]) for a, b in zip(batch, other))
  )
  for s, (ids, lab, w) in enumerate((batch, other)):
    np.testing.assert_array_equal(inputs[s], ids)
    masked = np.flatnonzero(w.reshape(-1))
    k = len(masked)
    np.testing.assert_array_equal(positions[s, :k], masked)  # in order, first
    np.testing.assert_array_equal(labels[s, :k], lab.reshape(-1)[masked])
    assert (weights[s, :k] == 1).all() and (weights[s, k:] == 0).all()
    assert (positions[s, k:] == 0).all()
  assert positions.shape[1] == max(int(batch[2].sum()), int(other[2].sum()))
  with pytest.raises(ValueError, match="no masked position"):
    bert.probe_batches(tuple(np.asarray(a)[None] for a in (batch[0], batch[1], 0 * batch[2])))


@pytest.mark.parametrize("group", ["ffn_0", "ffn_1", "heads_0"])
def test_barrier_set_matches_literal(variables, batch, group):
  p, spec = probe.probe(ARCH, group), probe.spec(ARCH, group)
  nodes = walks.random_walk(7, spec.size, 4)
  pb = _probe_batch(batch)
  stack = lambda t: jax.tree.map(lambda a: np.asarray(a)[None], t)
  got, tau = barrier.barrier_sets(
      p, spec, stack(variables), stack(pb), nodes[None, None], chunk=2, with_resolution=True
  )
  got = got[0, 0]
  base = _fns(ARCH)(variables, batch)[1]
  mid = jax.jit(lambda va, vb: _fns(ARCH)(barrier.interpolate(va, vb, 0.5), batch)[1])
  want = []
  for i in range(4):
    va = permutations.permute(spec, variables, nodes[i])
    vb = permutations.permute(spec, variables, nodes[i + 1])
    want.append(abs(float(mid(va, vb) - base)))
  assert min(want) > 1e-3
  # The literal loss is float32 too: both round L ~ log V ~ 7.6 (ulp 4.8e-7) by a few
  # ulps, below the engine's resolution tau (which is far below the barriers).
  assert tau[0] < 0.02 * min(want)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=tau[0])
