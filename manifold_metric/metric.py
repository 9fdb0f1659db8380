"""The manifold metric: m(theta, lambda, n) = e / n and M (Equation 2).

Everything here is a cheap reduction over barrier sets computed once by
`barrier.barrier_set`: the whole (q, n) grid of Appendix A.2.2 comes from
prefixes B[:n] of one set per checkpoint.
"""

import numpy as np
import pandas as pd

Q_GRID = (0.05, 0.1, 0.2, 0.4)
N_GRID = (50, 100, 250, 500, 1000)


def threshold(base_barriers, q: float, n: int) -> float:
  """lambda = B*_q: the q-quantile of the base model's first n barriers."""
  if not 0 < q < 1:
    raise ValueError(f"quantile q must lie in (0, 1), got {q}")
  b = _prefix(base_barriers, n)
  return float(np.quantile(b, q))


def manifold_size(barriers, lam: float, n: int) -> float:
  """m(theta, lambda, n): the fraction of the first n edges with |b| <= lambda."""
  return float(np.mean(_prefix(barriers, n) <= lam))


def manifold_metric(barriers, base_barriers, q: float, n: int) -> dict:
  """M(theta, phi*) in percent, with the lambda and both m it came from."""
  lam = threshold(base_barriers, q, n)
  m = manifold_size(barriers, lam, n)
  m_base = manifold_size(base_barriers, lam, n)
  return {"q": q, "n": n, "lambda": lam, "m": m, "m_base": m_base,
          "M": 100.0 * (m - m_base)}


def grid(barriers, base_barriers, qs=Q_GRID, ns=N_GRID) -> list[dict]:
  """manifold_metric for every (q, n); n larger than the set is an error."""
  return [manifold_metric(barriers, base_barriers, q, n) for n in ns for q in qs]


def _prefix(barriers, n: int):
  b = np.asarray(barriers, dtype=np.float64)
  if not 0 < n <= b.shape[0]:
    raise ValueError(f"n = {n} barriers asked for, but only {b.shape[0]} were "
                     "computed; raise metric.n_max in the config or lower n")
  return b[:n]


def table(barriers: pd.DataFrame, gains: pd.DataFrame, qs, ns) -> pd.DataFrame:
  """The metric table of one setting: M_t over the (q, n) grid for every
  candidate checkpoint, with the run's gains beside it.

  Args:
    barriers: barrier sets (columns setting, expansion, seed, epoch, node,
      barrier), phi*'s under expansion "base", one per seed.
    gains: `gain.gains` of the candidates' training logs.
    qs, ns: the grid.

  Returns:
    One row per (expansion, seed, epoch with a barrier set, q, n): setting,
    expansion, seed, epoch, q, n, lambda, m, m_base, M, and from `gains`
    performance, val_acc, gain, sotl_e, gain_best.
  """
  base = {seed: b.sort_values("node").barrier.to_numpy()
          for seed, b in barriers[barriers.expansion == "base"].groupby("seed")}
  outcome = gains.set_index(["expansion", "seed", "epoch"])
  rows = []
  for (setting, expansion, seed, epoch), b in barriers[barriers.expansion != "base"].groupby(
      ["setting", "expansion", "seed", "epoch"]):
    if seed not in base:
      raise ValueError(f"no barrier set of phi* for seed {seed}")
    if (expansion, seed, epoch) not in outcome.index:
      raise ValueError(f"no training log row for {expansion} seed {seed} epoch {epoch}")
    o = outcome.loc[(expansion, seed, epoch)]
    for r in grid(b.sort_values("node").barrier.to_numpy(), base[seed], qs, ns):
      rows.append({"setting": setting, "expansion": expansion, "seed": seed, "epoch": epoch,
                   **r, "val_acc": o.get("val_acc", np.nan), "performance": o.performance,
                   "gain": o.gain, "sotl_e": o.sotl_e, "gain_best": o.gain_best})
  return pd.DataFrame(rows)


def scratch_table(barriers: pd.DataFrame, qs, n: int) -> pd.DataFrame:
  """Figure 11 (i): M_t = m(theta_t) - m(theta_1) of a model trained from
  random initialisation, lambda the q-quantile of epoch 1's barrier set
  (at initialisation the manifold is vast: parameters lie on a high-loss
  surface, Appendix A.2.7).

  Args:
    barriers: one run's barrier sets per (setting, seed, epoch).

  Returns:
    One row per (setting, seed, epoch, q): lambda, m, m_base, M.
  """
  rows = []
  for (setting, seed), run in barriers.groupby(["setting", "seed"]):
    first = run[run.epoch == run.epoch.min()].sort_values("node").barrier.to_numpy()
    for epoch, e in run.groupby("epoch"):
      for q in qs:
        rows.append({"setting": setting, "seed": seed, "epoch": epoch,
                     **manifold_metric(e.sort_values("node").barrier.to_numpy(), first, q, n)})
  return pd.DataFrame(rows)
