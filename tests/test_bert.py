import jax
import jax.numpy as jnp
import numpy as np
import pytest

from manifold_metric import barrier, bert, config, expansion, permutations, text

DATA = config.bundled_dir("wikitext")  # the real text shipped with the package
VOCAB, SEQ = 2000, 32
ARCH = bert.arch("tinybert", VOCAB, max_len=64, hidden=32, heads=2, ffn=64)
MASK = jax.jit(text.mask_tokens, static_argnames=("vocab_size", "rate", "special_ids"))


@pytest.fixture(scope="module")
def data():
  """(train, eval) sequences: WikiText valid for training, test for evaluation."""
  train = text.read_split(DATA, "valid")
  vocab = text.build_vocab(train, VOCAB)
  return (text.sequences(text.encode(train, vocab), SEQ),
          text.sequences(text.encode(text.read_split(DATA, "test"), vocab), SEQ))


@pytest.fixture(scope="module")
def batch(data):
  return MASK(jax.random.key(3), data[0][:8], VOCAB, rate=0.3)


@pytest.fixture(scope="module")
def variables():
  """Initial parameters moved by noise, so that biases are non-zero and the
  midpoints of permuted copies clearly leave the minimum (barriers ~0.01-0.1)."""
  rng = np.random.default_rng(1)
  return jax.tree.map(lambda x: x + 0.3 * rng.normal(size=x.shape).astype(np.float32),
                      bert.init(ARCH, jax.random.key(0)))


def _fns(arch):
  """Jitted (logits, MLM loss) for one arch."""
  def f(v, b):
    out = bert.logits(arch, v, b[0])
    return out, bert.mlm_loss(out, b[1], b[2])
  return jax.jit(f)


FWD = _fns(ARCH)


def test_arch_presets():
  a = bert.arch("minibert", 100)
  assert a == {"kind": "bert", "layers": 4, "hidden": 256, "heads": 4,
               "ffn": [1024] * 4, "vocab_size": 100, "max_len": 512}
  assert bert.arch("tinybert", 100, ffn=[8, 16])["ffn"] == [8, 16]
  with pytest.raises(ValueError, match="not a multiple of heads"):
    bert.arch("tinybert", 100, hidden=30, heads=4)
  with pytest.raises(ValueError, match="unknown BERT preset"):
    bert.arch("bert-large", 100)


def test_forward_shapes(variables, batch):
  assert FWD(variables, batch)[0].shape == (8, SEQ, VOCAB)
  p = variables["params"]
  assert p["layers_0"]["attention"]["query"]["kernel"].shape == (32, 2, 16)
  assert p["layers_0"]["attention"]["out"]["kernel"].shape == (2, 16, 32)
  assert p["layers_1"]["ffn_in"]["kernel"].shape == (32, 64)
  assert p["positions"].shape == (64, 32) and "mlm_bias" in p
  # Tied output projection: no separate (hidden, vocab) decoder matrix.
  sizes = [x.size for x in jax.tree.leaves(p)]
  assert VOCAB * 32 in sizes and sizes.count(VOCAB * 32) == 1
  fresh = bert.init(ARCH, jax.random.key(0))
  assert abs(float(FWD(fresh, batch)[1]) - np.log(VOCAB)) < 0.5  # near-uniform at init


def test_mlm_loss_counts_only_weighted_positions():
  logits = np.random.default_rng(0).normal(size=(2, 5, 7)).astype(np.float32)
  labels = np.arange(10).reshape(2, 5) % 7
  weights = np.array([[1, 0, 0, 1, 0], [0, 0, 1, 0, 0]], np.float32)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  ce = -logp[np.arange(2)[:, None], np.arange(5), labels]
  want = (ce[0, 0] + ce[0, 3] + ce[1, 2]) / 3
  np.testing.assert_allclose(jax.jit(bert.mlm_loss)(logits, labels, weights), want, rtol=1e-6)


def test_stem_head_compose(variables, batch):
  module = bert.build(ARCH)
  ids = batch[0]
  want = FWD(variables, batch)[0]

  @jax.jit
  def split(v, ids):
    outs = [module.apply(v, module.apply(v, ids, method="embed"), method="encode")]
    for layer in range(ARCH["layers"]):
      z = module.apply(v, ids, layer=layer, method="stem")
      assert z.shape == (*ids.shape, ARCH["ffn"][layer])
      outs.append(module.apply(v, z, ids, layer=layer, method="head"))
    return outs

  for got in split(variables, ids):
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("group", ["ffn_0", "ffn_1", "heads_0"])
def test_permutation_preserves_logits(variables, batch, group):
  spec = bert.neuron_groups(ARCH)[group]
  permutations.check(spec, variables)
  perm = (jnp.array([1, 0]) if spec.size == 2
          else jax.random.permutation(jax.random.key(1), spec.size))
  assert not np.array_equal(perm, np.arange(spec.size))
  permuted = permutations.permute(spec, variables, perm)
  for path in spec.paths:
    assert not np.allclose(permutations.get(permuted, path), permutations.get(variables, path))
  np.testing.assert_allclose(FWD(permuted, batch)[0], FWD(variables, batch)[0], atol=5e-5)


def test_neuron_groups_and_specs():
  groups = bert.neuron_groups(ARCH)
  assert list(groups) == ["ffn_0", "ffn_1", "heads_0"]
  assert groups["ffn_0"].size == 64 and groups["heads_0"].size == 2
  assert all(a.role == "out" for a in groups["heads_0"].axes)
  assert [a.role for a in groups["ffn_1"].axes] == ["out", "out", "in"]
  assert bert.spec(ARCH, "heads_0").stem_axis is None
  assert bert.spec(ARCH, "ffn_1").stem_axis == -1
  assert bert.probe(ARCH, "heads_0") is bert.probe(dict(ARCH), "heads_0")
  with pytest.raises(ValueError, match="unknown BERT neuron group"):
    bert.probe(ARCH, "heads_1")


@pytest.mark.parametrize("how", [{"width": 96}, {"factor": 2.0}])
def test_widen_ffn_preserves_function(variables, batch, how):
  arch, wide = expansion.widen_ffn(ARCH, variables, jax.random.key(5), **how)
  new = 96 if "width" in how else 128
  assert arch["ffn"] == [new, new] and ARCH["ffn"] == [64, 64]
  for i in range(2):
    assert wide["params"][f"layers_{i}"]["ffn_in"]["kernel"].shape == (32, new)
    assert wide["params"][f"layers_{i}"]["ffn_out"]["kernel"].shape == (new, 32)
  (logits, loss), (want_logits, want_loss) = _fns(arch)(wide, batch), FWD(variables, batch)
  # float32: the random split reorders sums; bound relative to the logits' scale.
  np.testing.assert_allclose(logits, want_logits, rtol=0, atol=1e-5 * np.abs(want_logits).max())
  np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
  for spec in bert.neuron_groups(arch).values():  # the new arch's specs fit
    permutations.check(spec, wide)


@pytest.mark.parametrize("group", ["ffn_0", "ffn_1", "heads_0"])
def test_probe_loss_is_the_mlm_loss(variables, batch, group):
  """The probe scores the masked positions only: the same loss as full logits."""
  probe, pb = bert.probe(ARCH, group), bert.probe_batch(batch)
  assert 0 < len(pb[1]) < batch[0].size
  got = jax.jit(lambda v: probe.head(v, probe.stem(v, pb), pb))(variables)
  np.testing.assert_allclose(got, FWD(variables, batch)[1], rtol=1e-5)
  with pytest.raises(ValueError, match="no masked position"):
    bert.probe_batch((batch[0], batch[1], 0 * batch[2]))


@pytest.mark.parametrize("group", ["ffn_0", "ffn_1", "heads_0"])
def test_barrier_set_matches_literal(variables, batch, group):
  probe, spec = bert.probe(ARCH, group), bert.spec(ARCH, group)
  nodes = permutations.random_walk(jax.random.key(7), spec.size, 4)
  got = barrier.barrier_set(probe, spec, variables, bert.probe_batch(batch), nodes, chunk=2)
  base = FWD(variables, batch)[1]
  want = []
  for i in range(4):
    va = permutations.permute(spec, variables, nodes[i])
    vb = permutations.permute(spec, variables, nodes[i + 1])
    want.append(abs(float(FWD(barrier.interpolate(va, vb, 0.5), batch)[1] - base)))
  assert min(want) > 1e-3
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
