"""G_t, G_T* (best over every epoch 1..T of the log) and SoTL-E's sign."""

import numpy as np
import pandas as pd
import pytest

from manifold_metric import gain, train


def logs(perf_a, perf_b, loss=(np.nan, 3.0, 2.0, 1.0)):
  epochs = range(len(perf_a))
  return pd.DataFrame(
      {
          "expansion": ["a"] * len(perf_a) + ["b"] * len(perf_b),
          "seed": 0,
          "epoch": [*epochs, *epochs],
          "performance": [*perf_a, *perf_b],
          "train_loss_sum": [*loss, *loss],
      }
  )


def test_gain_is_relative_to_epoch_0_and_best_over_all_epochs():
  g = gain.gains(logs([0.5, 0.4, 0.7, 0.6], [0.5, 0.55, 0.52, 0.6]))
  a = g[g.expansion == "a"]
  np.testing.assert_allclose(a.gain, [0.0, -0.1, 0.2, 0.1])
  # G_T* is the best epoch (2), not the last (3) nor a checkpointed subset.
  np.testing.assert_allclose(a.gain_best, 0.2)
  np.testing.assert_allclose(g[g.expansion == "b"].gain_best, 0.1)


def test_best_gain_ignores_epoch_0_even_when_training_only_loses():
  g = gain.gains(logs([0.5, 0.4, 0.45, 0.3], [0.5, 0.6, 0.6, 0.6]))
  np.testing.assert_allclose(g[g.expansion == "a"].gain_best, -0.05)


def test_sotl_e_is_the_negative_sum_so_that_higher_predicts_better():
  g = gain.gains(logs([0.5, 0.6, 0.7, 0.8], [0.5, 0.6, 0.7, 0.8]))
  assert g.sotl_e.isna().sum() == 2  # t = 0: no training yet
  np.testing.assert_allclose(g[g.epoch > 0].sotl_e, [-3.0, -2.0, -1.0] * 2)


def test_every_run_needs_one_epoch_0_and_a_trained_epoch():
  with pytest.raises(ValueError, match="epoch-0 row"):
    gain.gains(logs([0.5, 0.6, 0.7, 0.8], [0.5, 0.6, 0.7, 0.8]).query("epoch != 0"))
  with pytest.raises(ValueError, match="without a trained epoch"):
    gain.gains(logs([0.5, 0.6, 0.7, 0.8], [0.5, 0.6, 0.7, 0.8]).query("epoch == 0"))


def test_paired_difference_of_best_and_worst():
  rows = []
  for seed, (ga, gb) in enumerate([(0.3, 0.1), (0.2, 0.1), (0.4, 0.1)]):
    rows += [
        {"expansion": "a", "seed": seed, "gain_best": ga},
        {"expansion": "b", "seed": seed, "gain_best": gb},
    ]
  d = gain.paired_difference(pd.DataFrame(rows))
  assert (d["best"], d["worst"], d["seeds"]) == ("a", "b", 3)
  assert d["diff"] == pytest.approx(0.2)
  assert d["se"] == pytest.approx(np.std([0.2, 0.1, 0.3], ddof=1) / np.sqrt(3))


def test_run_log_puts_phi_star_at_epoch_0():
  log = pd.DataFrame(
      train.run_log([{"epoch": 1, "train_loss_sum": 2.0, "val_acc": 0.7, "performance": 0.7}], 0.6)
  )
  assert list(log.epoch) == [0, 1] and log.performance.tolist() == [0.6, 0.7]
  assert log.val_acc.tolist() == [0.6, 0.7] and np.isnan(log.train_loss_sum[0])
  lm = train.run_log(
      [{"epoch": 1, "train_loss_sum": 2.0, "val_loss": 3.0, "performance": -1.1}], -1.2
  )
  assert "val_acc" not in lm[0] and lm[0]["performance"] == -1.2
  assert lm[0].keys() == lm[1].keys() and lm[0]["val_loss"] == pytest.approx(np.exp(1.2))
  # As gains reads it: G_t relative to A(phi*) at epoch 0.
  g = gain.gains(log.assign(expansion="x", seed=0))
  np.testing.assert_allclose(g.gain, [0.0, 0.1])
  np.testing.assert_allclose(g.gain_best, 0.1)
