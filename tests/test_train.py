"""One trainer for both tracks: learning, reproducibility, the optimizer
switch, and a run that is no longer learning (NaN, an exploding loss, stuck
at chance) failing with its name."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from manifold_metric import bert, config, data, models, text, train

VOCAB, SEQ = 300, 32
BERT = bert.arch("tinybert", VOCAB, max_len=SEQ, hidden=32, heads=2, ffn=64)
LM_HP = {"optimizer": "adam", "lr": 2e-3, "warmup": 4, "b1": 0.9, "b2": 0.999, "batch_size": 16,
         "eval_batch_size": 40}


@pytest.fixture(scope="module")
def digits():
  return data.load("digits")


@pytest.fixture(scope="module")
def wikitext():
  """Real WikiText-103 text (the copy shipped with the package): train on
  the validation split, evaluate on the test split."""
  path = config.bundled_dir("wikitext")
  tokens = text.read_split(path, "valid")
  vocab = text.build_vocab(tokens, VOCAB)
  return {"train": text.sequences(text.encode(tokens[:20000], vocab), SEQ),
          "val": text.sequences(text.encode(text.read_split(path, "test")[:4000], vocab), SEQ),
          "vocab_size": VOCAB}


def test_fit_base_learns_and_stops_early(digits):
  arch = models.default_arch("mlp", 10)
  v = models.init(arch, jax.random.key(0), (8, 8, 1))
  before = train.accuracy(arch, v, digits["x_val"], digits["y_val"])
  best, history, perf = train.fit_base(arch, v, digits, hp={"batch_size": 256},
                                       base={"max_epochs": 200, "patience": 3}, seed=0,
                                       run="test")
  after = train.accuracy(arch, best, digits["x_val"], digits["y_val"])
  assert after > 0.8 > before
  assert after == perf == max(h["val_acc"] for h in history)
  assert len(history) < 200  # early stopping
  assert all(h["train_loss_sum"] > 0 for h in history)


def test_training_is_reproducible(digits):
  arch = models.default_arch("cnn", 10, channels=[4], dense=16)
  v = models.init(arch, jax.random.key(0), (8, 8, 1))
  runs = [train.fit(arch, v, digits, hp={"batch_size": 256}, seed=3, epochs=2, run="r")[1]
          for _ in range(2)]
  assert runs[0] == runs[1]


def test_adam_has_no_weight_decay_and_adamw_has():
  params = {"w": jnp.ones((3,))}
  zero = {"w": jnp.zeros((3,))}
  for kind, moves in (("adam", False), ("adamw", True)):
    tx = train.optimizer({"optimizer": kind, "lr": 0.1, "weight_decay": 0.5})
    updates, _ = tx.update(zero, tx.init(params), params)
    new = optax.apply_updates(params, updates)["w"]
    # With a zero gradient only weight decay moves the weights: w - lr * wd * w.
    np.testing.assert_allclose(new, 1.0 - 0.1 * 0.5 if moves else 1.0, rtol=1e-6)
  with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
    train.optimizer({"optimizer": "sgd", "lr": 0.1})


def test_warmup_then_cosine_schedule():
  tx = train.optimizer({"optimizer": "adam", "lr": 1.0, "warmup": 2}, total_steps=10)
  params, grad = {"w": jnp.zeros(())}, {"w": jnp.ones(())}
  state, steps = tx.init(params), []
  for _ in range(10):
    updates, state = tx.update(grad, state, params)
    steps.append(-float(updates["w"]))
  assert steps[0] == 0.0 and steps[2] == pytest.approx(1.0, rel=1e-3)  # warm-up, then lr
  assert steps[2] > steps[5] > steps[9] >= 0.0  # cosine decay to 0 at step 10
  with pytest.raises(ValueError, match="warmup"):
    train.optimizer({"optimizer": "adam", "lr": 1.0, "warmup": 10}, total_steps=10)


def test_nan_names_the_run(digits):
  arch = models.default_arch("mlp", 10)
  v = jax.tree.map(lambda a: a * np.float32("nan"),
                   models.init(arch, jax.random.key(0), (8, 8, 1)))
  with pytest.raises(train.DivergenceError, match="digits-mlp/x2 seed 1: training diverged"):
    train.fit(arch, v, digits, hp={}, seed=0, epochs=2, run="digits-mlp/x2 seed 1")


def test_a_finite_explosion_names_the_run(digits):
  # lr 1e4: the loss reaches ~1e9 without ever turning NaN.
  arch = models.default_arch("mlp", 10)
  v = models.init(arch, jax.random.key(0), (8, 8, 1))
  saved = []
  with pytest.raises(train.DivergenceError, match=r"base x seed 0: training loss exploded at "
                     r"epoch 1: mean minibatch loss [\d.e+]+, more than 10 times"):
    train.fit(arch, v, digits, hp={"lr": 1e4, "batch_size": 256}, seed=0, epochs=5,
              run="base x seed 0", on_epoch=lambda *a: saved.append(a))
  assert not saved  # nothing of that epoch is passed on


def test_a_run_stuck_at_chance_names_the_run(digits):
  # Labels shuffled against the images: nothing to learn beyond chance.
  arch = models.default_arch("mlp", 10)
  v = models.init(arch, jax.random.key(0), (8, 8, 1))
  rng = np.random.default_rng(0)
  noise = {**digits, "y_train": rng.permutation(digits["y_train"]),
           "y_val": rng.permutation(digits["y_val"])}
  with pytest.raises(train.DivergenceError, match=r"stuck seed 0: not learning: the best epoch "
                     r"\(\d+\) reached performance 0\.\d+, against 0\.\d+ for chance"):
    train.fit_base(arch, v, noise, hp={"batch_size": 256}, base={"max_epochs": 30, "patience": 3},
                   seed=0, run="stuck seed 0")


def test_bert_trains_and_is_scored_by_minus_log_loss(wikitext):
  v = bert.init(BERT, jax.random.key(0))
  before = train.lm_val_loss(BERT, v, wikitext, LM_HP)
  assert before == train.lm_val_loss(BERT, v, wikitext, LM_HP)  # one fixed masking
  assert before == pytest.approx(np.log(VOCAB), rel=0.1)  # a fresh model knows nothing
  after_v, history = train.fit(BERT, v, wikitext, hp=LM_HP, seed=0, epochs=2, run="tiny-run")
  after = train.lm_val_loss(BERT, after_v, wikitext, LM_HP)
  assert after < before - 1.0, (before, after)
  assert history[1]["train_loss_sum"] < history[0]["train_loss_sum"]
  assert history[-1]["performance"] == pytest.approx(-np.log(after))
  assert train.performance(BERT, after_v, wikitext, LM_HP) == pytest.approx(-np.log(after))
  broken = jax.tree.map(lambda x: x * jnp.nan, after_v)
  with pytest.raises(train.DivergenceError, match="tiny-run: training diverged at epoch 1"):
    train.fit(BERT, broken, wikitext, hp=LM_HP, seed=0, epochs=1, run="tiny-run")


def test_bert_base_trains_fixed_epochs(wikitext):
  v = bert.init(BERT, jax.random.key(1))
  _, history, perf = train.fit_base(BERT, v, wikitext, hp=LM_HP, base={"epochs": 2}, seed=1,
                                    run="b")
  assert [h["epoch"] for h in history] == [1, 2] and perf == history[-1]["performance"]


def test_batch_norm_statistics_are_trained(digits):
  arch = models.default_arch("resnet18", 10, stages=[4, 4, 4, 4], mids=[[4], [4], [4], [4]])
  v = models.init(arch, jax.random.key(0), (8, 8, 1))
  out, _ = train.fit(arch, v, digits, hp={"batch_size": 512}, seed=0, epochs=2, run="bn")
  before = v["batch_stats"]["stem_bn"]["mean"]
  assert not np.allclose(out["batch_stats"]["stem_bn"]["mean"], before)
