import jax
import numpy as np
import pytest

from manifold_metric import data, models, train


@pytest.fixture(scope="module")
def digits():
  return data.load("digits")


def test_fit_base_learns_and_stops_early(digits):
  arch = models.default_arch("mlp", 10)
  v = models.init(arch, jax.random.key(0), (8, 8, 1))
  before = train.accuracy(arch, v, digits["x_val"], digits["y_val"])
  best, history = train.fit_base(arch, v, digits, hp={"batch_size": 256}, seed=0,
                                 max_epochs=200, patience=3, run="test")
  after = train.accuracy(arch, best, digits["x_val"], digits["y_val"])
  assert after > 0.8 > before
  assert after == max(h["val_acc"] for h in history)
  assert len(history) < 200  # early stopping
  assert all(h["train_loss_sum"] > 0 for h in history)


def test_training_is_reproducible(digits):
  arch = models.default_arch("cnn", 10, channels=[4], dense=16)
  v = models.init(arch, jax.random.key(0), (8, 8, 1))
  runs = []
  for _ in range(2):
    records = []
    train.run_epochs(arch, v, digits, hp={"batch_size": 256}, seed=3, epochs=2, run="r",
                     on_epoch=lambda t, v, r: records.append(r))
    runs.append(records)
  assert runs[0] == runs[1]


def test_divergence_names_the_run(digits):
  arch = models.default_arch("mlp", 10)
  v = models.init(arch, jax.random.key(0), (8, 8, 1))
  v = jax.tree.map(lambda a: a * np.float32("nan"), v)
  with pytest.raises(train.DivergenceError, match="digits-mlp/x2 seed 1: training diverged"):
    train.run_epochs(arch, v, digits, hp={}, seed=0, epochs=2, run="digits-mlp/x2 seed 1",
                     on_epoch=lambda *a: None)


def test_batch_norm_statistics_are_trained(digits):
  arch = models.default_arch("resnet18", 10, stages=[4, 4, 4, 4],
                             mids=[[4], [4], [4], [4]])
  v = models.init(arch, jax.random.key(0), (8, 8, 1))
  out = []
  train.run_epochs(arch, v, digits, hp={"batch_size": 512}, seed=0, epochs=1, run="bn",
                   on_epoch=lambda t, v, r: out.append(v))
  before = v["batch_stats"]["stem_bn"]["mean"]
  assert not np.allclose(out[0]["batch_stats"]["stem_bn"]["mean"], before)
