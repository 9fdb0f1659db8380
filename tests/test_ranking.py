"""The ranking before training: candidates by mean M_0 over seeds, and how
that ranking fared once they were trained."""

import numpy as np
import pandas as pd
import pytest

from manifold_metric import correlation, metric, ranking

GROUPS = ("hiddens_0", "hiddens_1")


def barriers(values):
  """Epoch-0 barrier sets: {(expansion, seed, group, walk): array}."""
  return pd.concat(
      [
          pd.DataFrame(
              {
                  "setting": "s",
                  "expansion": e,
                  "seed": s,
                  "epoch": 0,
                  "group": g,
                  "walk": w,
                  "node": np.arange(1, len(b) + 1),
                  "barrier": b,
              }
          )
          for (e, s, g, w), b in values.items()
      ],
      ignore_index=True,
  )


def _sets():
  """phi* and three candidates per seed, both groups and walks. In hiddens_1
  the order of 'small' and 'large' is reversed; the nonidentity walk's sets
  would rank 'none' first (rank must use the paper's walk only)."""
  rng = np.random.default_rng(0)
  factor = {
      "small": {"hiddens_0": 0.9, "hiddens_1": 0.2},
      "large": {"hiddens_0": 0.5, "hiddens_1": 0.95},
      "none": None,
  }
  base = {
      (s, g, w): rng.random(100) for s in (0, 1) for g in GROUPS for w in ("paper", "nonidentity")
  }
  sets = {("base", *k): b for k, b in base.items()}
  for e, f in factor.items():
    for (s, g, w), b in base.items():
      if w == "nonidentity":
        sets[(e, s, g, w)] = b * (0.1 if e == "none" else 2.0)
      else:
        sets[(e, s, g, w)] = b + 1.0 if f is None else b * f[g]
  return sets, base


def _scores():
  return pd.DataFrame(
      [
          {
              "setting": "s",
              "expansion": e,
              "seed": s,
              "epoch": 0,
              "size": size,
              "width": width,
              "snip": 1.0 + s,
          }
          for e, size, width in (
              ("base", 10, 4),
              ("small", 20, 8),
              ("large", 40, 16),
              ("none", 30, 4),
          )
          for s in (0, 1)
      ]
  )


def test_rank_orders_by_mean_m0_with_scores_beside():
  sets, base = _sets()
  table = ranking.rank(barriers(sets), _scores(), 0.4, 100, "hiddens_0", list(GROUPS))
  assert table.expansion.tolist() == ["large", "small", "none"]
  assert table["rank"].tolist() == [1, 2, 3]
  assert list(table.columns[:6]) == ["rank", "expansion", "M0", "M0_sd", "M0_all", "seeds"]

  def M(e, s, g):
    return metric.manifold_metric(sets[(e, s, g, "paper")], base[(s, g, "paper")], 0.4, 100)["M"]

  t = table.set_index("expansion")
  for e in ("large", "small", "none"):
    per_seed = [M(e, s, "hiddens_0") for s in (0, 1)]
    assert t.loc[e, "M0"] == pytest.approx(np.mean(per_seed))
    assert t.loc[e, "M0_sd"] == pytest.approx(np.std(per_seed, ddof=1))
    assert t.loc[e, "M0_all"] == pytest.approx(
        np.mean([np.mean([M(e, s, g) for g in GROUPS]) for s in (0, 1)])
    )
  assert t.loc["none", "M0"] == pytest.approx(-40.0)
  # hiddens_1 reverses small and large, so M0_all orders them the other way round.
  assert t.loc["small", "M0_all"] > t.loc["large", "M0_all"]
  assert table["size"].tolist() == [40, 20, 30] and table["width"].tolist() == [16, 8, 4]
  assert (table.snip == 1.5).all() and (table.seeds == 2).all()
  md = ranking.markdown(table, "s", 0.4, 100)
  assert md.startswith("# s: candidate expansions ranked") and "| large" in md
  assert "M0_all" in md and "width" in md


def test_rank_uses_only_the_listed_hidden_groups():
  sets, _ = _sets()
  one = ranking.rank(barriers(sets), _scores(), 0.4, 100, "hiddens_0", ["hiddens_0"])
  np.testing.assert_allclose(one.M0_all, one.M0)


def test_rank_needs_phi_star_of_every_seed():
  b = barriers(
      {("base", 0, "hiddens_0", "paper"): np.ones(10), ("x", 1, "hiddens_0", "paper"): np.ones(10)}
  )
  with pytest.raises(ValueError, match="seed, group, walk.*1"):
    ranking.rank(
        b, pd.DataFrame(columns=["expansion", "seed", "size"]), 0.4, 10, "hiddens_0", ["hiddens_0"]
    )


def _summary():
  """Kendall tau per seed at t = 0: manifold beats size on every seed, width
  on none; jacov is undefined everywhere."""
  tau = {
      "manifold": [0.8, 0.6, 1.0],
      "manifold_all": [0.4, 0.2, 0.6],
      "size": [0.2, 0.4, 0.0],
      "width": [0.8, 0.6, 1.0],
      "jacov": [np.nan] * 3,
  }
  corr = pd.DataFrame(
      [
          dict(setting="s", seed=s, epoch=0, metric=m, method="kendall", value=v)
          for m, vs in tau.items()
          for s, v in enumerate(vs)
      ]
  )
  return correlation.summarize(corr)


def test_outcome_shows_tau_and_its_differences_to_size_and_width():
  md = ranking.outcome_markdown(_summary(), "s")
  assert md.startswith("# s: how the ranking before training fared")
  lines = {
      line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
      for line in md.splitlines()
      if line.startswith("| ") and "---" not in line
  }
  assert lines["score"] == ["tau(score, G_T*)", "tau - tau(size)", "tau - tau(width)"]
  s = _summary().set_index("metric")
  # manifold: mean 0.8; minus size: 0.6, 0.2, 1.0 -> +0.60; minus width: exactly 0.
  tau, size, width = lines["manifold"]
  assert tau == f"+0.80 [{s.loc['manifold', 'ci_low']:+.2f}, {s.loc['manifold', 'ci_high']:+.2f}]"
  assert size == (
      f"+0.60 [{s.loc['manifold', 'minus_size_low']:+.2f}, "
      f"{s.loc['manifold', 'minus_size_high']:+.2f}]"
  )
  assert s.loc["manifold", "minus_size_low"] > 0  # ranked better than size on every seed
  assert width == "+0.00 [+0.00, +0.00]"
  assert lines["jacov"] == ["undefined"] * 3
  assert list(lines)[1:] == ["manifold", "manifold_all", "size", "width", "jacov"]  # the order


def test_outcome_counts_seeds_where_a_score_is_undefined():
  corr = pd.DataFrame(
      [
          dict(setting="s", seed=s, epoch=0, metric=m, method="kendall", value=v)
          for m, vs in {"manifold": [0.5, np.nan, 0.7], "size": [0.1, 0.2, 0.3]}.items()
          for s, v in enumerate(vs)
      ]
  )
  md = ranking.outcome_markdown(correlation.summarize(corr), "s")
  row = next(line for line in md.splitlines() if line.startswith("| manifold"))
  assert "(2/3 seeds)" in row and "+0.60" in row  # mean of 0.5 and 0.7
  assert "+0.40" in row  # (0.5 - 0.1 + 0.7 - 0.3) / 2
