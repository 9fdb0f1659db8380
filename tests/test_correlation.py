import math
import warnings

import numpy as np
import pandas as pd
import pytest

from manifold_metric import correlation
from manifold_metric.correlation import METHODS, correlations, rank_correlation, summarize


@pytest.mark.parametrize("method", METHODS)
def test_concordant_is_one_and_reversed_is_minus_one(method):
  a = [0.1, 0.5, 2.0, 3.0, 7.0]
  b = [1.0, 2.0, 3.0, 4.0, 5.0]  # linear in rank, but not in a: only ranks agree
  if method == "pearson":
    b = [2 * x + 1 for x in a]
  assert rank_correlation(a, b, method) == pytest.approx(1.0)
  assert rank_correlation(a, [-x for x in b], method) == pytest.approx(-1.0)


def test_hand_computed_values():
  # 4 items, one discordant pair (2, 3) of 6: tau = (5 - 1) / 6.
  assert rank_correlation([1, 2, 3, 4], [1, 3, 2, 4], "kendall") == pytest.approx(2 / 3)
  # A tie in a: pair (2, 3) counts for neither; tau_b = (C - D) / sqrt((n0 - n1)(n0 - n2))
  # = (5 - 0) / sqrt((6 - 1) * 6).
  assert rank_correlation([1, 2, 2, 3], [1, 2, 3, 4], "kendall") == pytest.approx(5 / math.sqrt(30))
  # Spearman: 1 - 6 sum d^2 / (n (n^2 - 1)), d = (0, 1, 1, 0).
  assert rank_correlation([1, 2, 3, 4], [1, 3, 2, 4], "spearman") == pytest.approx(1 - 12 / 60)
  # Pearson: deviations (-1, 0, 1) and (-4/3, -1/3, 5/3): 3 / sqrt(2 * 14/3).
  assert rank_correlation([1, 2, 3], [1, 2, 4], "pearson") == pytest.approx(3 / math.sqrt(28 / 3))
  # Spearman uses ranks, Pearson values: they differ on the same data.
  a, b = [1, 2, 3, 4], [1, 2, 3, 40]
  assert rank_correlation(a, b, "spearman") == pytest.approx(1.0)
  assert rank_correlation(a, b, "pearson") < 0.9


@pytest.mark.parametrize("method", METHODS)
def test_degenerate_inputs_are_nan_without_warnings(method):
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    assert math.isnan(rank_correlation([1, 1, 1], [1, 2, 3], method))
    assert math.isnan(rank_correlation([1, 2, 3], [5, 5, 5], method))
    assert math.isnan(rank_correlation([1], [2], method))
    assert math.isnan(rank_correlation([], [], method))
    assert math.isnan(rank_correlation([1, np.nan, 3], [1, 2, 3], method))


@pytest.mark.parametrize("method", METHODS)
def test_float32_rounding_is_a_tie(method):
  # Equal in exact arithmetic, apart in float32 rounding: a constant score.
  jacov = np.float32(-3.2541) * (1 + np.array([0, 1, -2, 3]) * np.finfo(np.float32).eps)
  assert math.isnan(rank_correlation(jacov, [1, 2, 3, 4], method))
  # Two such ties among distinct values rank as ties, not by their noise.
  a = np.array([1.0, 1.0 + 1e-7, 2.0, 3.0])
  assert rank_correlation(a, [2, 1, 3, 4], "kendall") == pytest.approx(
      rank_correlation([1, 1, 2, 3], [2, 1, 3, 4], "kendall")
  )
  # Distinct values well above the tolerance keep their order.
  assert rank_correlation([1.0, 1.001, 1.002], [1, 2, 3], method) == pytest.approx(1.0)


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match="unknown correlation method"):
    rank_correlation([1, 2], [1, 2], "tau")
  with pytest.raises(ValueError, match="equal length"):
    rank_correlation([1, 2, 3], [1, 2], "kendall")


def _candidates():
  """Two settings x two seeds x two epochs, three candidates each; `good` ranks
  the candidates like the gain, `bad` reversed, except one group."""
  rows = []
  for setting in ("cnn-c10", "mlp-mnist"):
    for seed in (0, 1):
      for epoch in (1, 5):
        for cand, gain in enumerate([0.1, 0.3, 0.2]):
          bad = -gain if (setting, seed, epoch) != ("mlp-mnist", 1, 5) else gain
          rows.append(
              dict(
                  setting=setting,
                  seed=seed,
                  epoch=epoch,
                  candidate=cand,
                  good=10 * gain,
                  bad=bad,
                  const=1.0,
                  gain=gain,
              )
          )
  return pd.DataFrame(rows)


def test_correlations_long_format():
  out = correlations(_candidates(), ["good", "bad", "const"], "gain")
  assert list(out.columns) == ["setting", "seed", "epoch", "metric", "method", "value"]
  assert len(out) == 2 * 2 * 2 * 3 * len(METHODS)
  assert set(out["method"]) == set(METHODS)
  good, const = out[out.metric == "good"], out[out.metric == "const"]
  assert np.allclose(good["value"], 1.0)
  assert const["value"].isna().all()
  bad = out[out.metric == "bad"].set_index(["setting", "seed", "epoch", "method"])["value"]
  assert bad[("mlp-mnist", 1, 5, "kendall")] == pytest.approx(1.0)
  assert bad[("cnn-c10", 0, 1, "kendall")] == pytest.approx(-1.0)
  one = correlations(_candidates(), ["bad"], "gain", methods=["kendall"])
  assert set(one["method"]) == {"kendall"} and len(one) == 8


def test_summarize_over_seeds():
  corr = correlations(_candidates(), ["good", "bad", "const"], "gain", methods=["kendall"])
  s = summarize(corr).set_index(["setting", "metric", "method", "epoch"])
  assert list(s.columns) == ["mean", "std", "count", "seeds", "ci_low", "ci_high"]
  assert len(s) == 2 * 3 * 2 and (s.seeds == 2).all()
  # Seeds 0 and 1 of mlp-mnist at epoch 5 give -1 and +1: mean 0, std sqrt(2).
  row = s.loc[("mlp-mnist", "bad", "kendall", 5)]
  assert row["mean"] == pytest.approx(0.0) and row["std"] == pytest.approx(math.sqrt(2))
  assert row["count"] == 2
  row = s.loc[("cnn-c10", "bad", "kendall", 1)]
  assert row["mean"] == pytest.approx(-1.0) and row["std"] == pytest.approx(0.0)
  const = s.loc[("cnn-c10", "const", "kendall", 1)]
  assert math.isnan(const["mean"]) and math.isnan(const["std"]) and const["count"] == 0
  assert math.isnan(const["ci_low"])  # undefined on every seed: no interval


def test_summarize_skips_nan_seeds():
  corr = pd.DataFrame(
      dict(
          setting="s",
          metric="m",
          method="kendall",
          epoch=1,
          seed=[0, 1, 2],
          value=[0.2, np.nan, 0.6],
      )
  )
  row = summarize(corr).iloc[0]
  assert row["mean"] == pytest.approx(0.4)
  assert row["std"] == pytest.approx(np.std([0.2, 0.6], ddof=1))
  assert row["count"] == 2


def _one_score(values, metric="m", epoch=0):
  return pd.DataFrame(
      dict(
          setting="s",
          metric=metric,
          method="kendall",
          epoch=epoch,
          seed=range(len(values)),
          value=values,
      )
  )


def _exact_bootstrap_means(values):
  """The mean of every one of the n^n equally likely resamples of n values."""
  n = len(values)
  picks = np.array(np.meshgrid(*[np.arange(n)] * n)).reshape(n, -1).T
  return np.asarray(values, np.float64)[picks].mean(axis=1)


def test_summary_interval_is_the_percentile_bootstrap_of_the_mean():
  values = [0.2, 0.5, 0.9, 0.4]
  row = summarize(_one_score(values)).iloc[0]
  assert row["ci_low"] <= np.mean(values) <= row["ci_high"]
  # Against the exact bootstrap distribution (all 4^4 resamples): with 10,000
  # resamples the 2.5% and 97.5% percentiles lie within 0.5 points of level
  # (3 standard errors) of the exact ones.
  means = _exact_bootstrap_means(values)
  for got, level in ((row["ci_low"], 2.5), (row["ci_high"], 97.5)):
    assert (
        np.percentile(means, level - 0.5, method="lower")
        <= got
        <= np.percentile(means, level + 0.5, method="higher")
    ), (got, level)
  # Narrower than the whole range of resampled means, wider at a higher level.
  assert means.min() < row["ci_low"] and row["ci_high"] < means.max()
  wide = summarize(_one_score(values), level=0.99).iloc[0]
  assert wide["ci_low"] <= row["ci_low"] and wide["ci_high"] >= row["ci_high"]
  assert wide["ci_high"] - wide["ci_low"] > row["ci_high"] - row["ci_low"]
  # Reproducible: a fixed random state.
  again = summarize(_one_score(values)).iloc[0]
  assert (again["ci_low"], again["ci_high"]) == (row["ci_low"], row["ci_high"])


def test_summary_interval_of_equal_values_and_of_one_seed():
  row = summarize(_one_score([0.4, 0.4, 0.4])).iloc[0]
  assert (row["ci_low"], row["ci_high"]) == (0.4, 0.4)
  assert row["std"] == pytest.approx(0.0, abs=1e-12)
  one = summarize(_one_score([0.3])).iloc[0]
  assert one["count"] == 1 and one["mean"] == 0.3
  assert math.isnan(one["ci_low"]) and math.isnan(one["ci_high"]) and math.isnan(one["std"])
  # Two seeds, one undefined: one defined value, no interval.
  nan = summarize(_one_score([0.3, np.nan])).iloc[0]
  assert (nan["count"], nan["seeds"]) == (1, 2) and math.isnan(nan["ci_low"])


def _with_baselines():
  """Per seed 0..3, Kendall tau of the manifold metric (epochs 0, 1), size
  and width (epoch 0 only; width constant across candidates: undefined)."""
  manifold = {0: [0.6, 0.2, 1.0, np.nan], 1: [0.0, 0.4, 0.6, 0.2]}
  size = [0.2, 0.4, 0.2, 0.6]
  rows = [
      dict(setting="s", seed=s, epoch=t, metric="manifold", method="kendall", value=v)
      for t, vs in manifold.items()
      for s, v in enumerate(vs)
  ]
  rows += [
      dict(setting="s", seed=s, epoch=0, metric="size", method="kendall", value=v)
      for s, v in enumerate(size)
  ]
  rows += [
      dict(setting="s", seed=s, epoch=0, metric="width", method="kendall", value=np.nan)
      for s in range(4)
  ]
  return pd.DataFrame(rows)


def test_paired_differences_to_size_and_width():
  s = summarize(_with_baselines()).set_index(["metric", "epoch"])
  m0, m1 = s.loc[("manifold", 0)], s.loc[("manifold", 1)]
  # Epoch 0, seeds 0-2 (seed 3 is undefined): 0.6 - 0.2, 0.2 - 0.4, 1.0 - 0.2.
  assert m0["minus_size"] == pytest.approx((0.4 - 0.2 + 0.8) / 3)
  assert m0["minus_size_count"] == 3 and m0["count"] == 3 and m0["seeds"] == 4
  means = _exact_bootstrap_means([0.4, -0.2, 0.8])
  assert (
      np.percentile(means, 2, method="lower")
      <= m0["minus_size_low"]
      <= m0["minus_size"]
      <= m0["minus_size_high"]
      <= np.percentile(means, 98, method="higher")
  )
  # Epoch 1 is paired with size's epoch-0 tau of the same seed: 0 - 0.2, 0.4 - 0.4, ...
  assert m1["minus_size"] == pytest.approx((-0.2 + 0.0 + 0.4 - 0.4) / 4)
  assert m1["minus_size_count"] == 4
  # Width is constant across candidates: no defined difference.
  for row in (m0, m1):
    assert row["minus_width_count"] == 0 and math.isnan(row["minus_width"])
    assert math.isnan(row["minus_width_low"]) and math.isnan(row["minus_width_high"])
  # size minus itself is 0 on every seed, an interval [0, 0].
  own = s.loc[("size", 0)]
  assert (own["minus_size"], own["minus_size_low"], own["minus_size_high"]) == (0.0, 0.0, 0.0)
  # Without baselines there are no such columns; with only size, no width's.
  assert not any(c.startswith("minus_") for c in summarize(_with_baselines(), baselines=()))
  only = summarize(_with_baselines()[lambda d: d.metric != "width"])
  assert "minus_size" in only and "minus_width" not in only


def _metric_rows():
  """A metric table of 3 candidates x 2 seeds x epochs 0, 1 at q 0.2/0.4,
  n 50, two groups (convs_0 first, both hidden), both walks. The
  nonidentity walk and convs_1 rank the candidates the other way round."""
  rows = []
  for seed in (0, 1):
    for cand, (m0, g) in enumerate([(10.0, 0.1), (30.0, 0.3), (20.0, 0.2)]):
      for epoch in (0, 1):
        for q in (0.2, 0.4):
          for group in ("convs_0", "convs_1"):
            for walk in ("paper", "nonidentity"):
              sign = -1 if walk == "nonidentity" else 1
              M = sign * (m0 * (2 if q == 0.4 else 1) - epoch)
              if group == "convs_1":
                M = 100.0 - 3 * M
              rows.append(
                  dict(
                      setting="s",
                      expansion=f"e{cand}",
                      seed=seed,
                      epoch=epoch,
                      group=group,
                      walk=walk,
                      q=q,
                      n=50,
                      M=M,
                      first=group == "convs_0",
                      hidden=True,
                      lambda_zero=(q == 0.2 and seed == 1 and cand == 0),
                      gain=g * epoch,
                      gain_best=g,
                      sotl_e=np.nan if epoch == 0 else -1.0 / g,
                  )
              )
  return pd.DataFrame(rows)


def test_score_table_and_setting_correlations():
  metrics = _metric_rows()
  scores = pd.DataFrame(
      [
          dict(setting="s", expansion=e, seed=seed, epoch=0, size=size, snip=-size)
          for seed in (0, 1)
          for e, size in (("base", 1), ("e0", 10), ("e1", 30), ("e2", 20))
      ]
  )
  table = correlation.score_table(metrics, scores, 0.4, 50)
  assert {
      "manifold",
      "manifold_q0.2",
      "manifold_q0.4",
      "manifold_all",
      "sotl_e",
      "size",
      "snip",
      "gain_best",
  } <= set(table)
  assert len(table) == 3 * 2 * 2 and "base" not in set(table.expansion)
  assert table[table.epoch == 1][["size", "snip"]].isna().all().all()
  t = table.set_index(["expansion", "seed", "epoch"])
  # The first group on the paper's walk; manifold_all the mean over both groups at q = 0.4.
  assert t.loc[("e1", 0, 1), "manifold"] == 59.0 == t.loc[("e1", 0, 1), "manifold_q0.4"]
  assert t.loc[("e1", 0, 1), "manifold_q0.2"] == 29.0
  assert t.loc[("e1", 0, 1), "manifold_all"] == pytest.approx((59.0 + 100 - 3 * 59.0) / 2)
  corr = correlation.setting_correlations(table, once=["size", "snip"])
  k = corr[corr.method == "kendall"].set_index(["metric", "seed", "epoch"]).value
  assert k[("manifold", 0, 0)] == pytest.approx(1.0) and k[("size", 1, 0)] == pytest.approx(1.0)
  assert k[("manifold_all", 0, 0)] == pytest.approx(-1.0)  # convs_1 dominates the mean
  assert k[("snip", 0, 0)] == pytest.approx(-1.0)
  assert ("size", 0, 1) not in k.index  # scored once, at t = 0
  assert math.isnan(k[("sotl_e", 0, 0)]) and k[("sotl_e", 0, 1)] == pytest.approx(1.0)


def test_sensitivity_over_the_grid_per_walk():
  sens = correlation.sensitivity(_metric_rows())
  assert set(zip(sens.q, sens.n)) == {(0.2, 50), (0.4, 50)}
  assert (sens.epoch == 0).all() and set(sens.walk) == {"paper", "nonidentity"}
  assert len(sens) == 2 * 2 * 2  # walks x seeds x q
  np.testing.assert_allclose(sens[sens.walk == "paper"].value, 1.0)
  np.testing.assert_allclose(sens[sens.walk == "nonidentity"].value, -1.0)
  zero = sens.set_index(["walk", "seed", "q"]).lambda_zero
  assert zero[("paper", 1, 0.2)] and zero[("nonidentity", 1, 0.2)]
  assert zero.sum() == 2  # lambda = 0 for one candidate of seed 1 at q = 0.2 only
