"""One trainer for both tracks, every seed in one vmapped program: learning,
each seed's result as if trained alone, per-seed early stopping, the
optimizer switch, and a run that is no longer learning (NaN, an exploding
loss, stuck at chance) failing with its name and seed."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from manifold_metric import archs, bert, data, study, text, tracks, train

VOCAB, SEQ = 300, 32
BERT = archs.BERT(layers=2, hidden=32, heads=2, ffn=(64, 64), vocab_size=VOCAB, max_len=SEQ)
LM_HP = {
    "optimizer": "adam",
    "lr": 2e-3,
    "warmup": 4,
    "b1": 0.9,
    "b2": 0.999,
    "batch_size": 16,
    "eval_batch_size": 40,
}
MLP = archs.MLP((32,), 10)
HP = {"batch_size": 256}
# Batched against seed-by-seed runs (see the test): parameters agree to this, after a
# few epochs of digits. Measured: at most 6e-8 (MLP) and 2.3e-7 (a CNN) on parameters
# of magnitude ~0.5 after 5 epochs (30 steps); the bound leaves a margin of about 10.
PARAM_ATOL = 2e-6


@pytest.fixture(scope="module")
def digits():
  return data.load("digits")


@pytest.fixture(scope="module")
def wikitext():
  """Real WikiText-103 text (the copy shipped with the package): train on
  the validation split, evaluate on the test split."""
  path = study.bundled_dir("wikitext")
  tokens = text.read_split(path, "valid")
  vocab = text.build_vocab(tokens, VOCAB)
  return {
      "train": text.sequences(text.encode(tokens[:20000], vocab), SEQ),
      "val": text.sequences(text.encode(text.read_split(path, "test")[:4000], vocab), SEQ),
      "vocab_size": VOCAB,
  }


@pytest.fixture(scope="module")
def mlp_init(digits):
  return tracks.init_seeds(MLP, [0, 1, 2], digits)


def _one(stacked, i):
  """Model i of a stack, as a stack of one."""
  return jax.tree.map(lambda a: np.asarray(a)[i : i + 1], stacked)


def _accuracy(arch, stacked, ds):
  return [r["val_acc"] for r in tracks.validate(arch, stacked, ds, {})]


def test_fit_base_learns_and_stops_early(digits, mlp_init):
  v = _one(mlp_init, 0)
  before = _accuracy(MLP, v, digits)[0]
  best, histories, perf = train.fit_base(
      MLP, v, digits, hp=HP, base={"max_epochs": 200, "patience": 3}, seeds=[0], run="test"
  )
  (history,) = histories
  after = _accuracy(MLP, best, digits)[0]
  assert after > 0.8 > before
  assert after == perf[0] == max(h["val_acc"] for h in history)
  assert len(history) < 200  # early stopping
  best_epoch = max(history, key=lambda h: h["performance"])["epoch"]
  assert history[-1]["epoch"] == best_epoch + 3  # three epochs without improving
  assert all(h["train_loss_sum"] > 0 for h in history)
  assert [h["epoch"] for h in history] == list(range(1, len(history) + 1))


def test_seeds_trained_together_are_each_trained_alone(digits, mlp_init):
  """All seeds in one vmapped program give each seed what a run of that seed
  alone gives. Not bit for bit: vmap turns each matmul into a batched matmul,
  whose float32 accumulation can round differently in the last bits, and Adam
  carries such differences on. PARAM_ATOL bounds them; the validation
  performance agrees to within one validation example."""
  seeds = [0, 1, 2]
  together, histories = train.fit(MLP, mlp_init, digits, hp=HP, seeds=seeds, epochs=3, run="t")
  one_example = 1 / len(digits["y_val"])
  for i, seed in enumerate(seeds):
    alone, (history,) = train.fit(
        MLP, _one(mlp_init, i), digits, hp=HP, seeds=[seed], epochs=3, run="a"
    )
    for a, b in zip(jax.tree.leaves(together), jax.tree.leaves(alone)):
      np.testing.assert_allclose(np.asarray(a)[i], np.asarray(b)[0], rtol=0, atol=PARAM_ATOL)
    assert len(history) == len(histories[i]) == 3
    for h, g in zip(history, histories[i]):
      assert abs(h["performance"] - g["performance"]) <= one_example + 1e-7
      assert h["train_loss_sum"] == pytest.approx(g["train_loss_sum"], rel=1e-5)
  # The seeds differ: their own data order, from key(seed) and the epoch.
  assert len({h[-1]["train_loss_sum"] for h in histories}) == 3
  same_init = jax.tree.map(lambda a: np.repeat(np.asarray(a)[:1], 2, axis=0), mlp_init)
  _, twins = train.fit(MLP, same_init, digits, hp=HP, seeds=[0, 5], epochs=1, run="t")
  assert twins[0][0]["train_loss_sum"] != twins[1][0]["train_loss_sum"]


def test_training_is_reproducible(digits, mlp_init):
  runs = [
      train.fit(MLP, _one(mlp_init, 1), digits, hp=HP, seeds=[3], epochs=2, run="r")[1]
      for _ in range(2)
  ]
  assert runs[0] == runs[1]


def _dead(variables):
  """The (stacked) model with every hidden unit dead on every input: only the
  output bias learns, so it predicts one class and its accuracy plateaus at once."""
  hidden = variables["params"]["hiddens_0"]
  return {
      "params": {
          **variables["params"],
          "hiddens_0": {**hidden, "bias": np.full_like(hidden["bias"], -1e3)},
      }
  }


def test_each_seed_stops_early_on_its_own(digits, mlp_init):
  """Seed 8's model cannot learn: it runs out of patience and stops (its
  updates masked, its best epoch's model returned) while seed 9 goes on."""
  stacked = jax.tree.map(
      lambda a, b: np.concatenate([a, b]), _dead(_one(mlp_init, 0)), _one(mlp_init, 1)
  )
  seen = []
  out, (stuck, learning) = train.fit(
      MLP,
      stacked,
      digits,
      hp=HP,
      seeds=[8, 9],
      epochs=40,
      run="es",
      patience=3,
      on_epoch=lambda t, v, r: seen.append((t, v, r)),
  )
  assert len(stuck) < len(learning)
  best_stuck = max(stuck, key=lambda h: h["performance"])
  assert stuck[-1]["epoch"] == best_stuck["epoch"] + 3
  assert learning[-1]["performance"] > 0.8 > best_stuck["performance"]
  stop = stuck[-1]["epoch"]
  for t, v, records in seen:
    assert (records[0] is None) == (t > stop) and records[1] is not None
    if t > stop:  # a stopped seed no longer changes
      for a, b in zip(jax.tree.leaves(v), jax.tree.leaves(seen[stop - 1][1])):
        np.testing.assert_array_equal(np.asarray(a)[0], np.asarray(b)[0])
  # Each seed's returned model is its best epoch's.
  scores = tracks.validate(MLP, out, digits, {})
  assert scores[0]["performance"] == best_stuck["performance"]
  assert scores[1]["performance"] == max(h["performance"] for h in learning)
  # Seed 9 trained as if alone: the stopped seed does not disturb it.
  _, (alone,) = train.fit(
      MLP, _one(mlp_init, 1), digits, hp=HP, seeds=[9], epochs=len(learning), run="a", patience=3
  )
  assert [h["performance"] for h in alone] == pytest.approx(
      [h["performance"] for h in learning], abs=1 / len(digits["y_val"]) + 1e-7
  )


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


def test_adam_updates_are_optax_adams_and_share_adamws_program():
  params = {"w": jnp.linspace(-1.0, 1.0, 7), "b": jnp.ones((3,))}
  grads = [jax.tree.map(lambda a, i=i: jnp.sin(a * (i + 2.0)), params) for i in range(4)]
  ours, ref = train.optimizer({"optimizer": "adam", "lr": 0.1}), optax.adam(0.1)
  s_ours, s_ref, p_ours, p_ref = ours.init(params), ref.init(params), params, params
  for g in grads:
    u, s_ours = ours.update(g, s_ours, p_ours)
    v, s_ref = ref.update(g, s_ref, p_ref)
    p_ours, p_ref = optax.apply_updates(p_ours, u), optax.apply_updates(p_ref, v)
  # Adam as AdamW with a weight decay of 0: optax's Adam, bit for bit.
  jax.tree.map(np.testing.assert_array_equal, p_ours, p_ref)
  # The decay is an input, not a constant: one compiled update for both.
  texts = []
  for kind in ("adam", "adamw"):
    tx = train.optimizer({"optimizer": kind, "lr": 0.1, "weight_decay": 0.5})
    texts.append(jax.jit(tx.update).lower(grads[0], tx.init(params), params).as_text())
  assert texts[0] == texts[1]


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


def test_steps_per_epoch_and_candidate_seed():
  assert train.steps_per_epoch(MLP, 1000, 256) == 4  # every example, a last partial batch
  assert train.steps_per_epoch(BERT, 1000, 256) == 3  # fixed-size batches only
  assert train.candidate_seed(3) == 3 + train.CANDIDATE_SEED_OFFSET != 3


def test_nan_names_the_run_and_the_seed(digits, mlp_init):
  broken = jax.tree.map(lambda a: np.asarray(a).copy(), _one(mlp_init, 0))
  v = jax.tree.map(
      lambda a, b: np.concatenate([a, b * np.float32("nan")]), _one(mlp_init, 1), broken
  )
  with pytest.raises(
      train.DivergenceError, match="digits-mlp/x2 seed 7: training diverged at " "epoch 1"
  ):
    train.fit(MLP, v, digits, hp=HP, seeds=[4, 7], epochs=2, run="digits-mlp/x2")


def test_a_finite_explosion_names_the_run(digits, mlp_init):
  # lr 1e4: the loss reaches ~1e9 without ever turning NaN.
  saved = []
  with pytest.raises(
      train.DivergenceError,
      match=r"base x seed 0: training loss exploded at "
      r"epoch 1: mean minibatch loss [\d.e+]+, more than 10 times",
  ):
    train.fit(
        MLP,
        _one(mlp_init, 0),
        digits,
        hp={"lr": 1e4, "batch_size": 256},
        seeds=[0],
        epochs=5,
        run="base x",
        on_epoch=lambda *a: saved.append(a),
    )
  assert not saved  # nothing of that epoch is passed on


def test_a_run_stuck_at_chance_names_the_seed(digits, mlp_init):
  # Labels shuffled against the images: nothing to learn beyond chance.
  rng = np.random.default_rng(0)
  noise = {
      **digits,
      "y_train": rng.permutation(digits["y_train"]),
      "y_val": rng.permutation(digits["y_val"]),
  }
  with pytest.raises(
      train.DivergenceError,
      match=r"stuck seed 0: not learning: the best epoch "
      r"\(\d+\) reached performance 0\.\d+, against 0\.\d+ for chance",
  ):
    train.fit_base(
        MLP,
        _one(mlp_init, 0),
        noise,
        hp=HP,
        base={"max_epochs": 30, "patience": 3},
        seeds=[0],
        run="stuck",
    )


def _bert_variables(rng):
  """BERT's initialisation in numpy (compiling Flax's is slow): N(0, 0.02)
  kernels and embeddings, zero biases, unit LayerNorm scales."""
  shapes = jax.eval_shape(lambda: bert.init(BERT, jax.random.key(0)))

  def draw(path, s):
    name = jax.tree_util.keystr(path)
    if "scale" in name:
      return np.ones(s.shape)
    return np.zeros(s.shape) if "bias" in name else rng.normal(0, 0.02, s.shape)

  return jax.tree_util.tree_map_with_path(
      lambda p, s: np.asarray(draw(p, s), s.dtype)[None], shapes
  )


def test_bert_trains_and_is_scored_by_minus_log_loss(wikitext):
  v = _bert_variables(np.random.default_rng(0))
  before = tracks.validate(BERT, v, wikitext, LM_HP)[0]
  assert before == tracks.validate(BERT, v, wikitext, LM_HP)[0]  # one fixed masking
  assert before["val_loss"] == pytest.approx(np.log(VOCAB), rel=0.1)  # a fresh model knows nothing
  after_v, (history,) = train.fit(BERT, v, wikitext, hp=LM_HP, seeds=[0], epochs=2, run="tiny-run")
  after = tracks.validate(BERT, after_v, wikitext, LM_HP)[0]
  assert after["val_loss"] < before["val_loss"] - 1.0, (before, after)
  assert history[1]["train_loss_sum"] < history[0]["train_loss_sum"]
  assert history[-1]["performance"] == pytest.approx(-np.log(after["val_loss"]))
  assert after["performance"] == pytest.approx(-np.log(after["val_loss"]))
  broken = jax.tree.map(lambda x: x * jnp.nan, after_v)
  with pytest.raises(train.DivergenceError, match="tiny-run seed 0: training diverged at epoch 1"):
    # epochs=2 as above: the same schedule, the same compiled program
    train.fit(BERT, broken, wikitext, hp=LM_HP, seeds=[0], epochs=2, run="tiny-run")
  # A token id beyond the vocabulary embeds as NaN (jnp.take fills): a
  # validation score that is not finite stops the run, never lands in a table.
  bad_val = np.array(wikitext["val"])
  bad_val[0, 0] = VOCAB + 5
  with pytest.raises(
      train.DivergenceError, match="tiny-run seed 0: validation performance is nan at epoch 1"
  ):
    train.fit(BERT, v, {**wikitext, "val": bad_val}, hp=LM_HP, seeds=[0], epochs=2, run="tiny-run")
  # The last partial batch is dropped: fewer sequences than a batch is an error.
  short = {**wikitext, "train": wikitext["train"][: LM_HP["batch_size"] - 1]}
  with pytest.raises(ValueError, match="do not fill one batch"):
    train.fit(BERT, v, short, hp=LM_HP, seeds=[0], epochs=1, run="x")


def test_bert_base_trains_fixed_epochs(wikitext):
  v = _bert_variables(np.random.default_rng(1))
  _, (history,), perf = train.fit_base(
      BERT, v, wikitext, hp=LM_HP, base={"epochs": 2}, seeds=[1], run="b"
  )
  assert [h["epoch"] for h in history] == [1, 2] and perf == [history[-1]["performance"]]


def test_batch_norm_statistics_are_trained(digits):
  arch = archs.ResNet18((4, 4, 4, 4), ((4,), (4,), (4,), (4,)), 10)
  shapes = jax.eval_shape(lambda: tracks.IMAGE.init(arch, jax.random.key(0), digits))
  rng = np.random.default_rng(0)

  def draw(path, s):  # BatchNorm at its initial values, fan-in scaled kernels
    name = jax.tree_util.keystr(path)
    if len(s.shape) > 1:
      return rng.normal(0, np.prod(s.shape[:-1]) ** -0.5, s.shape)
    return np.ones(s.shape) if "var" in name or "scale" in name else np.zeros(s.shape)

  v = jax.tree_util.tree_map_with_path(lambda p, s: np.asarray(draw(p, s), s.dtype)[None], shapes)
  out, _ = train.fit(arch, v, digits, hp={"batch_size": 512}, seeds=[0], epochs=1, run="bn")
  before = v["batch_stats"]["stem_bn"]["mean"][0]
  assert not np.allclose(out["batch_stats"]["stem_bn"]["mean"][0], before)
