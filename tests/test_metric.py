"""m, lambda and M (Equation 2) of one barrier set, their exact-zero shares,
and the same over tables of many sets (`of_sets`, `table`, `scratch_table`)."""

import itertools

import numpy as np
import pandas as pd
import pytest

from manifold_metric import metric


def test_manifold_size_counts_edges_below_threshold():
  b = np.array([0.1, 0.5, 0.2, 0.9, 0.05])
  assert metric.manifold_size(b, 0.2, 5) == 3 / 5
  assert metric.manifold_size(b, 0.2, 2) == 1 / 2  # prefix of n


def test_threshold_is_quantile_of_base_prefix():
  base = np.arange(1000, dtype=float)
  assert metric.threshold(base, 0.4, 1000) == pytest.approx(np.quantile(base, 0.4))
  assert metric.threshold(base, 0.5, 100) == pytest.approx(49.5)


def test_metric_is_difference_in_percent():
  rng = np.random.default_rng(0)
  base = rng.uniform(size=1000)
  cand = base * 0.5  # every barrier halved: more edges under the same lambda
  r = metric.manifold_metric(cand, base, 0.4, 1000)
  assert r["lambda"] == pytest.approx(np.quantile(base, 0.4))
  assert r["m_base"] == pytest.approx(0.4, abs=1e-3)
  assert r["m"] == pytest.approx(np.mean(cand <= r["lambda"]))
  assert r["M"] == pytest.approx(100 * (r["m"] - r["m_base"]))
  assert r["M"] > 30
  assert metric.manifold_metric(base, base, 0.4, 1000)["M"] == 0


def test_metric_counts_exact_zeros_and_says_when_lambda_is_zero():
  # phi*: 3 of its first 10 barriers exactly 0; the candidate: 5 of 10.
  base = np.array([0, 0.3, 0, 0.5, 0.2, 0, 0.9, 0.4, 0.7, 0.1, 0.0, 0.0])
  cand = np.array([0, 0, 0.6, 0, 0.25, 0, 0.8, 0, 0.05, 0.3, 0.1, 0.2])
  r = metric.manifold_metric(cand, base, 0.2, 10)
  assert (r["zero"], r["zero_base"]) == (0.5, 0.3)  # of the first n = 10 only
  # q = 0.2 of phi*'s 10: below its 30% zeros, so lambda = 0 and m counts only zeros.
  assert r["lambda"] == 0.0 and r["lambda_zero"] is True
  assert (r["m"], r["m_base"]) == (0.5, 0.3) and r["M"] == pytest.approx(20.0)
  above = metric.manifold_metric(cand, base, 0.4, 10)
  lam = np.quantile(base[:10], 0.4)
  assert lam > 0 and above["lambda_zero"] is False
  # lambda = 0.1 + 0.6 * (0.2 - 0.1) = 0.16 (numpy's linear quantile, hand-computed).
  assert lam == pytest.approx(0.16)
  assert above["m"] == np.mean(cand[:10] <= lam) == 0.6  # the 5 zeros and 0.05
  assert above["m_base"] == 0.4  # the 3 zeros and 0.1
  assert (above["zero"], above["zero_base"]) == (0.5, 0.3)  # whatever q is
  # All of n = 12: the trailing zeros count.
  assert metric.manifold_metric(cand, base, 0.2, 12)["zero_base"] == pytest.approx(5 / 12)


def test_a_barrier_within_tol_above_lambda_is_an_edge_of_both_sets():
  # lambda = the 0.5-quantile of phi*'s 4 barriers = 0.25 (between 0.2 and 0.3).
  base = np.array([0.1, 0.2, 0.3, 0.4])
  cand = np.array([0.25, 0.2500004, 0.26, 0.9])
  exact = metric.manifold_metric(cand, base, 0.5, 4)
  assert exact["lambda"] == pytest.approx(0.25)
  assert (exact["m"], exact["m_base"]) == (0.25, 0.5)  # 0.2500004 > lambda: not an edge
  loose = metric.manifold_metric(cand, base, 0.5, 4, tol=1e-6)
  assert loose["lambda"] == exact["lambda"]
  assert (loose["m"], loose["m_base"]) == (0.5, 0.5) and loose["M"] == 0.0
  wide = metric.manifold_metric(cand, base, 0.5, 4, tol=0.06)  # phi*'s 0.3 too
  assert (wide["m"], wide["m_base"]) == (0.75, 0.75)
  assert metric.manifold_metric(base, base, 0.5, 4, tol=0.06)["M"] == 0.0


def test_grid_uses_prefixes_of_one_set():
  rng = np.random.default_rng(1)
  base, cand = rng.uniform(size=1000), rng.uniform(size=1000)
  rows = metric.grid(cand, base)
  assert len(rows) == len(metric.Q_GRID) * len(metric.N_GRID)
  for r in rows:
    assert r == metric.manifold_metric(cand[: r["n"]], base[: r["n"]], r["q"], r["n"])


@pytest.mark.parametrize("q", [0.0, 1.0, -0.1, 1.5])
def test_q_outside_unit_interval_is_rejected(q):
  with pytest.raises(ValueError, match="q must lie in"):
    metric.threshold(np.ones(10), q, 10)


def test_n_larger_than_computed_is_named():
  with pytest.raises(ValueError, match="n = 20 barriers asked for, but only 10"):
    metric.manifold_size(np.ones(10), 0.5, 20)


# ------------------------------------------------------------------ tables of sets

N = 40
QS, NS = (0.1, 0.4), (20, 40)
GROUPS, WALKS, SEEDS = ("convs_0", "convs_1"), ("paper", "nonidentity"), (3, 7)
EXPANSIONS = {"x2": (0, 1, 5), "x3": (0, 5)}


def _draw(rng):
  """A barrier set with some exact zeros (so that lambda = 0 happens at small q)."""
  b = rng.exponential(size=N)
  b[rng.random(N) < 0.15] = 0.0
  return b


def _barrier_table():
  """{(expansion, seed, epoch, group, walk): barriers}, the same as a barrier table,
  and each set's resolution (the table's column). Some candidate barriers sit just
  above phi*'s, so that the tolerance decides edges."""
  rng = np.random.default_rng(0)
  sets, tau = {}, {}
  for seed, group, walk in itertools.product(SEEDS, GROUPS, WALKS):
    base = sets[("base", seed, 0, group, walk)] = _draw(rng)
    tau[("base", seed, 0, group, walk)] = rng.uniform(1e-3, 2e-2)
    for e, epochs in EXPANSIONS.items():
      for t in epochs:
        b = _draw(rng)
        b[:5] = base[:5] + rng.uniform(0, 2e-2, 5) * (base[:5] > 0)
        sets[(e, seed, t, group, walk)] = b
        tau[(e, seed, t, group, walk)] = rng.uniform(1e-3, 2e-2)
  frames = [
      pd.DataFrame(
          {
              "setting": "s",
              "model": "cnn",
              "expansion": e,
              "group": g,
              "walk": w,
              "seed": s,
              "epoch": t,
              "node": np.arange(1, N + 1),
              "barrier": b,
              "resolution": tau[(e, s, t, g, w)],
          }
      )
      for (e, s, t, g, w), b in sets.items()
  ]
  # Rows in an order unlike the sets', so that nothing depends on it.
  table = pd.concat(frames, ignore_index=True).sample(frac=1, random_state=1)
  return sets, table, tau


def _check_against_manifold_metric(rows, sets, reference, tol=lambda key: 0.0):
  assert len(rows) == len(
      set(map(tuple, rows[["expansion", "seed", "epoch", "group", "walk", "q", "n"]].to_numpy()))
  )
  for r in rows.to_dict("records"):
    key = (r["expansion"], r["seed"], r["epoch"], r["group"], r["walk"])
    want = metric.manifold_metric(sets[key], reference(key), r["q"], r["n"], tol(key))
    for k in ("lambda", "m", "m_base", "M", "zero", "zero_base", "lambda_zero"):
      assert r[k] == want[k], (key, r["q"], r["n"], k)


def test_of_sets_is_manifold_metric_of_each_set_against_its_seeds_phi_star():
  """With the larger resolution of the two sets as the tolerance."""
  sets, table, tau = _barrier_table()
  rows = metric.of_sets(table, QS, NS)
  cands = [k for k in sets if k[0] != "base"]
  assert len(rows) == len(cands) * len(QS) * len(NS)
  assert set(rows.expansion) == set(EXPANSIONS)
  base_of = lambda k: ("base", k[1], 0, k[3], k[4])
  _check_against_manifold_metric(
      rows, sets, lambda k: sets[base_of(k)], lambda k: max(tau[k], tau[base_of(k)])
  )
  assert rows.lambda_zero.any() and not rows.lambda_zero.all()  # both cases are covered
  # The tolerance matters here: without the column, other m.
  exact = metric.of_sets(table.drop(columns="resolution"), QS, NS)
  _check_against_manifold_metric(exact, sets, lambda k: sets[base_of(k)])
  assert (exact.m != rows.m).any()


def test_of_sets_needs_phi_star_and_a_candidate():
  _, table, _ = _barrier_table()
  no_base = table[~((table.expansion == "base") & (table.seed == 7) & (table.walk == "paper"))]
  with pytest.raises(ValueError, match=r"no barrier set of phi\* for \(seed, group, walk\).*7"):
    metric.of_sets(no_base, QS, NS)
  with pytest.raises(ValueError, match="no candidate barrier set"):
    metric.of_sets(table[table.expansion == "base"], QS, NS)


def _gains():
  rows = [
      {
          "expansion": e,
          "seed": s,
          "epoch": t,
          "performance": 0.5 + 0.01 * t + 0.1 * s,
          "val_acc": 0.5 + 0.01 * t,
          "gain": 0.01 * t,
          "sotl_e": -1.0 / (1 + t),
          "gain_best": 0.05 * len(e) + s,
      }
      for e, epochs in EXPANSIONS.items()
      for s in SEEDS
      for t in range(6)
  ]
  return pd.DataFrame(rows)


def test_table_adds_groups_and_the_runs_gains():
  _, table, _ = _barrier_table()
  gains = _gains()
  out = metric.table(table, gains, QS, NS, first_group="convs_0", hidden_groups=["convs_1"])
  rows = metric.of_sets(table, QS, NS)
  pd.testing.assert_frame_equal(out[rows.columns], rows)
  assert (out["first"] == (out.group == "convs_0")).all() and out["first"].any()
  assert (out.hidden == (out.group == "convs_1")).all()
  g = gains.set_index(["expansion", "seed", "epoch"])
  for r in out.itertuples():
    for c in ("val_acc", "performance", "gain", "sotl_e", "gain_best"):
      assert getattr(r, c) == g.loc[(r.expansion, r.seed, r.epoch), c]
  lm = metric.table(table, gains.drop(columns="val_acc"), QS, NS, "convs_0", ["convs_0"])
  assert lm.val_acc.isna().all() and lm.hidden.eq(lm["first"]).all()


def test_table_needs_a_log_row_of_every_checkpoint():
  _, table, _ = _barrier_table()
  gains = _gains()
  gains = gains[~((gains.expansion == "x3") & (gains.epoch == 5))]
  with pytest.raises(ValueError, match=r"no training log row.*'x3'.*5"):
    metric.table(table, gains, QS, NS, "convs_0", ["convs_0", "convs_1"])


def test_scratch_table_is_relative_to_the_first_epoch():
  rng = np.random.default_rng(2)
  sets = {(s, t, w): _draw(rng) for s in SEEDS for t in (1, 2, 4) for w in WALKS}
  tau = {k: rng.uniform(0, 0.05) for k in sets}
  table = pd.concat(
      [
          pd.DataFrame(
              {
                  "setting": "s",
                  "expansion": "scratch",
                  "group": "ffn_0",
                  "walk": w,
                  "seed": s,
                  "epoch": t,
                  "node": np.arange(1, N + 1),
                  "barrier": b,
                  "resolution": tau[(s, t, w)],
              }
          )
          for (s, t, w), b in sets.items()
      ],
      ignore_index=True,
  )
  out = metric.scratch_table(table, QS, 30)
  assert len(out) == len(sets) * len(QS) and "expansion" not in out
  for r in out.itertuples():
    first = (r.seed, 1, r.walk)
    want = metric.manifold_metric(
        sets[(r.seed, r.epoch, r.walk)],
        sets[first],
        r.q,
        30,
        max(tau[(r.seed, r.epoch, r.walk)], tau[first]),
    )
    assert (r.m, r.m_base, r.M, r.zero, r.zero_base, r.lambda_zero) == (
        want["m"],
        want["m_base"],
        want["M"],
        want["zero"],
        want["zero_base"],
        want["lambda_zero"],
    )
  assert (out[out.epoch == 1].M == 0).all()
