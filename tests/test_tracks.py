"""The two tracks (image classifiers, BERT): the dispatcher, the metric batch
of each seed, BERT's padded probe batches, validation scores, the
preservation check and the parameter count."""

import functools
import math

import jax
import numpy as np
import pytest

from manifold_metric import archs, bert, data, image_models, probe, text, tracks

VOCAB, SEQ = 40, 12
BERT_ARCH = archs.BERT(layers=1, hidden=8, heads=2, ffn=(12,), vocab_size=VOCAB, max_len=SEQ)
HP = {"eval_batch_size": 7}


@pytest.fixture(scope="module")
def digits():
  return data.load("digits")


@pytest.fixture(scope="module")
def lm():
  rng = np.random.default_rng(0)
  return {
      "train": rng.integers(3, VOCAB, (30, SEQ)).astype(np.int32),
      "val": rng.integers(3, VOCAB, (10, SEQ)).astype(np.int32),
      "vocab_size": VOCAB,
  }


def _variables(arch, seed=0, shape=(8, 8, 1)):
  """Random variables of the model's shapes (traced, not compiled)."""
  if archs.is_lm(arch):
    shapes = jax.eval_shape(lambda: bert.init(arch, jax.random.key(0)))
  else:
    shapes = jax.eval_shape(lambda: image_models.init(arch, jax.random.key(0), shape))
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda s: np.asarray(
          rng.normal(0, np.prod(s.shape[:-1]) ** -0.5 if len(s.shape) > 1 else 0.3, s.shape),
          s.dtype,
      ),
      shapes,
  )


def _stack(*trees):
  return jax.tree.map(lambda *a: np.stack(a), *trees)


def test_of_dispatches_on_the_architecture_and_the_dataset(digits, lm):
  assert tracks.of(archs.MLP((4,), 10)) is tracks.IMAGE is tracks.of_dataset(digits)
  assert tracks.of(BERT_ARCH) is tracks.LM is tracks.of_dataset(lm)
  assert tracks.build_arch({"kind": "cnn", "channels": [4]}, digits) == archs.CNN((4,), 256, 10)
  got = tracks.build_arch({"kind": "bert", "layers": 1, "ffn": 8}, lm)
  assert got == archs.BERT(1, 128, 2, (8,), VOCAB, SEQ)  # tinybert's sizes, the data's


def test_load_dataset_reads_either_track(tmp_path, digits, lm):
  data.save(digits, tmp_path / "d.npz")
  data.save(lm, tmp_path / "t.npz")
  d, t = tracks.load_dataset(tmp_path / "d.npz"), tracks.load_dataset(tmp_path / "t.npz")
  assert d["num_classes"] == 10 and tracks.of_dataset(d) is tracks.IMAGE
  np.testing.assert_array_equal(t["train"], lm["train"])
  assert tracks.of_dataset(t) is tracks.LM
  assert tracks.build_arch({"kind": "bert"}, t).vocab_size == VOCAB


def test_batch_indices_are_seeded_sorted_and_need_enough_data():
  idx = tracks.batch_indices(100, 3, 20)
  np.testing.assert_array_equal(idx, np.sort(np.random.default_rng([3, 1]).permutation(100)[:20]))
  assert len(set(idx)) == 20 and (np.diff(idx) > 0).all()
  assert not np.array_equal(idx, tracks.batch_indices(100, 4, 20))
  np.testing.assert_array_equal(tracks.batch_indices(100, 3, 100), np.arange(100))
  with pytest.raises(
      ValueError, match=r"a metric batch of 101 .*needs at least 101 training " r"examples.* 100"
  ):
    tracks.batch_indices(100, 3, 101)


def test_image_metric_batches_are_each_seeds_batch(digits):
  arch = archs.MLP((4,), 10)
  x, y = tracks.metric_batches(arch, digits, [0, 5, 2], 64)
  assert x.shape == (3, 64, 8, 8, 1) and y.shape == (3, 64)
  n = len(digits["x_train"])
  for s, seed in enumerate([0, 5, 2]):
    idx = tracks.batch_indices(n, seed, 64)
    np.testing.assert_array_equal(x[s], digits["x_train"][idx])
    np.testing.assert_array_equal(y[s], digits["y_train"][idx])
    one = tracks.metric_batches(archs.CNN((4,), 8, 10), digits, [seed], 64)  # any model
    np.testing.assert_array_equal(one[0][0], x[s])
  assert not np.array_equal(x[0], x[1])
  with pytest.raises(ValueError, match="needs at least"):
    tracks.metric_batches(arch, digits, [0], n + 1)


def test_bert_metric_batches_mask_each_seeds_sequences_once(lm):
  seeds = [3, 8]
  stacked = tracks.metric_batches(BERT_ARCH, lm, seeds, 6)
  inputs, positions, labels, weights = stacked
  assert inputs.shape == (2, 6, SEQ) and positions.shape == labels.shape == weights.shape
  for s, seed in enumerate(seeds):
    rows = tracks.batch_indices(30, seed, 6)  # the rows an image batch would take
    masked = text.mask_tokens(jax.random.key(seed), lm["train"][rows], VOCAB)
    alone = bert.probe_batches(tuple(np.asarray(a)[None] for a in masked))
    k = alone[1].shape[1]  # this seed's masked positions; the stack pads to the most
    np.testing.assert_array_equal(inputs[s], alone[0][0])
    np.testing.assert_array_equal(positions[s, :k], alone[1][0])
    np.testing.assert_array_equal(labels[s, :k], alone[2][0])
    np.testing.assert_array_equal(weights[s, :k], 1.0)
    np.testing.assert_array_equal(weights[s, k:], 0.0)
    np.testing.assert_array_equal(labels[s, :k], lm["train"][rows].reshape(-1)[positions[s, :k]])
  again = tracks.metric_batches(BERT_ARCH, lm, seeds, 6)
  for a, b in zip(stacked, again):
    np.testing.assert_array_equal(a, b)
  assert weights[0].sum() != weights[1].sum()  # so one of them is padded


@pytest.mark.parametrize("group", ["ffn_0", "heads_0"])
def test_padded_bert_probe_batches_give_the_unpadded_loss(lm, group):
  masked = text.mask_tokens(jax.random.key(1), lm["train"][:6], VOCAB)
  batch = tuple(np.asarray(a)[None] for a in masked)
  tight = bert.probe_batches(batch)
  k = tight[1].shape[1]
  padded = bert.probe_batches(batch, length=k + 9)
  assert padded[1].shape[1] == k + 9 and (padded[3][0, k:] == 0).all()
  v = _variables(BERT_ARCH)
  loss = jax.jit(probe.probe(BERT_ARCH, group).loss)
  one = lambda b: tuple(a[0] for a in b)
  full = bert.mlm_loss(bert.build(BERT_ARCH).apply(v, masked[0]), masked[1], masked[2])
  np.testing.assert_allclose(loss(v, one(tight)), full, rtol=1e-5)
  np.testing.assert_allclose(loss(v, one(padded)), loss(v, one(tight)), rtol=1e-6)


def test_cross_entropy_with_weights():
  logits = np.log(np.array([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]], np.float32))
  labels = np.array([0, 1, 1])
  ce = -np.log([0.5, 0.1, 0.8])
  assert float(tracks.cross_entropy(logits, labels)) == pytest.approx(ce.mean(), rel=1e-6)
  w = np.array([1.0, 0.0, 3.0], np.float32)
  assert float(tracks.cross_entropy(logits, labels, w)) == pytest.approx(
      (ce[0] + 3 * ce[2]) / 4, rel=1e-6
  )
  assert float(tracks.cross_entropy(logits, labels, 0 * w)) == 0.0  # no weight: no NaN


def test_image_validation_is_the_accuracy_of_each_seed(digits):
  arch = archs.MLP((6,), 10)
  models = [_variables(arch, s) for s in range(3)]
  got = tracks.validate(arch, _stack(*models), digits, {})
  assert len(digits["x_val"]) % 1024 != 0  # the last evaluation batch is padded
  for model, record in zip(models, got):
    pred = np.argmax(image_models.apply(arch, model, digits["x_val"]), -1)
    acc = float(np.mean(pred == digits["y_val"]))
    assert record == {
        "val_acc": pytest.approx(acc, abs=1e-7),
        "performance": pytest.approx(acc, abs=1e-7),
    }
  assert len({r["val_acc"] for r in got}) == 3
  chance, loss, perfect = tracks.IMAGE.chance(arch, digits)
  assert chance == np.bincount(digits["y_val"]).max() / len(digits["y_val"])
  assert (loss, perfect) == (pytest.approx(math.log(10)), 1.0)


def test_lm_validation_is_minus_log_of_the_fixed_masking_loss(lm):
  models = [_variables(BERT_ARCH, s) for s in range(2)]
  got = tracks.validate(BERT_ARCH, _stack(*models), lm, HP)
  inputs, labels, weights = text.mask_tokens(jax.random.key(0), lm["val"], VOCAB)
  for model, record in zip(models, got):
    logits = bert.build(BERT_ARCH).apply(model, inputs)
    loss = float(bert.mlm_loss(logits, labels, weights))
    assert record["val_loss"] == pytest.approx(loss, rel=1e-5)
    assert record["performance"] == pytest.approx(-math.log(loss), rel=1e-5)
  # The batch size only splits the work (10 sequences: batches of 7 and a padded 3).
  again = tracks.validate(BERT_ARCH, _stack(*models), lm, {"eval_batch_size": 10})
  for a, b in zip(got, again):
    assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-6)
  chance, loss, perfect = tracks.LM.chance(BERT_ARCH, lm)
  assert loss == pytest.approx(math.log(VOCAB)) and chance == pytest.approx(-math.log(loss))
  assert perfect == math.inf


def test_check_preserved_names_the_expansion_and_the_seed():
  tracks.check_preserved(archs.MLP((4,), 10), [0.5, 0.7], [0.5, 0.7], "x", [1, 2])
  with pytest.raises(
      RuntimeError,
      match=r"expansion e of s, seed 2, changed the validation "
      r"performance from 0.7 to 0.69.*not function-preserving",
  ):
    tracks.check_preserved(archs.MLP((4,), 10), [0.5, 0.7], [0.5, 0.69], "expansion e of s", [1, 2])
  # BERT's -log loss: float32 round-off of 1e-4 relative passes, more does not.
  tracks.check_preserved(BERT_ARCH, [-1.5], [-1.5 * (1 + 5e-5)], "x", [0])
  with pytest.raises(RuntimeError, match="seed 0"):
    tracks.check_preserved(BERT_ARCH, [-1.5], [-1.5 * (1 + 2e-4)], "x", [0])


def test_init_seeds_stacks_each_seeds_own_initialisation(digits):
  arch = archs.MLP((3,), 10)
  stacked = tracks.init_seeds(arch, [4, 1], digits)
  for i, seed in enumerate([4, 1]):
    want = image_models.init(arch, jax.random.key(seed), (8, 8, 1))
    for a, b in zip(jax.tree.leaves(stacked), jax.tree.leaves(want)):
      np.testing.assert_allclose(np.asarray(a)[i], b, rtol=1e-6)
  k = stacked["params"]["hiddens_0"]["kernel"]
  assert not np.allclose(k[0], k[1])


def test_param_count_counts_trainable_parameters():
  arch = archs.ResNet18((2, 2, 2, 2), ((2,), (2,), (2,), (2,)), 3)
  v = _variables(arch)
  want = sum(np.size(a) for a in jax.tree.leaves(v["params"]))
  assert tracks.param_count(v) == want
  assert tracks.param_count(_variables(archs.MLP((6,), 10))) == 64 * 6 + 6 + 6 * 10 + 10
  assert want < sum(np.size(a) for a in jax.tree.leaves(v))  # BatchNorm statistics excluded


def test_batch_norm_training_loss_updates_the_running_statistics():
  arch = archs.ResNet18((2, 2, 2, 2), ((2,), (2,), (2,), (2,)), 3)
  v = _variables(arch)
  x = np.random.default_rng(0).normal(size=(4, 8, 8, 1)).astype(np.float32)
  y = np.array([0, 1, 2, 0])
  loss, new = jax.jit(functools.partial(tracks.IMAGE.train_loss, arch))(v, (x, y))
  assert not np.allclose(new["batch_stats"]["stem_bn"]["mean"], v["batch_stats"]["stem_bn"]["mean"])
  logits = image_models.apply(arch, v, x, train=True)
  assert float(loss) == pytest.approx(float(tracks.cross_entropy(logits, y)), rel=1e-5)
  mlp = archs.MLP((4,), 3)
  w = _variables(mlp)
  _, same = tracks.IMAGE.train_loss(mlp, w, (x, y))
  assert same is w
