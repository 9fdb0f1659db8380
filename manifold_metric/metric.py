"""The manifold metric: m(theta, lambda, n) = e / n and M (Equation 2).

Everything here is a cheap reduction over barrier sets computed once by
`barrier.barrier_sets`: the whole (q, n) grid of Appendix A.2.2 comes from
prefixes B[:n] of one set per checkpoint.
"""

import numpy as np
import pandas as pd

Q_GRID = (0.05, 0.1, 0.2, 0.4)
N_GRID = (50, 100, 250, 500, 1000)


def threshold(base_barriers, q: float, n: int) -> float:
  """lambda = B*_q: the q-quantile of the base model's first n barriers."""
  return float(_quantile(_prefix(base_barriers, n), q))


def manifold_size(barriers, lam: float, n: int) -> float:
  """m(theta, lambda, n): the fraction of the first n edges with |b| <= lambda."""
  return float(np.mean(_prefix(barriers, n) <= lam))


def _quantile(b, q: float):
  if not 0 < q < 1:
    raise ValueError(f"quantile q must lie in (0, 1), got {q}")
  return np.quantile(b, q, axis=-1)


def _metric(b, base, q: float, tol=0.0) -> dict:
  """Equation 2 over the last axis of barrier sets b and phi*'s `base`; a
  barrier within `tol` above lambda counts as an edge, in both sets (so that
  M(phi*, phi*) = 0)."""
  lam = _quantile(base, q)
  edge = (lam + tol)[..., None]
  m, m_base = (b <= edge).mean(-1), (base <= edge).mean(-1)
  return {
      "lambda": lam,
      "m": m,
      "m_base": m_base,
      "M": 100.0 * (m - m_base),
      "zero": (b == 0).mean(-1),
      "zero_base": (base == 0).mean(-1),
      "lambda_zero": lam == 0,
  }


def manifold_metric(barriers, base_barriers, q: float, n: int, tol: float = 0.0) -> dict:
  """M(theta, phi*) in percent, with the lambda and both m it came from.

  `tol`: a barrier at most this much above lambda counts as an edge (of
  theta's and of phi*'s sets alike).
  lambda is one of phi*'s barriers, and a step of theta often has the same
  barrier in exact arithmetic (the same step up to Net2Net replicas or dead
  neurons, or a layer above that computes the same function); float32 rounds
  the two apart by about the loss's resolution (`barrier.resolution`), and
  where many barriers tie at lambda (a small layer has few distinct steps)
  that rounding alone would move m by whole percent. `table` passes the
  larger of both models' resolutions.

  Also the share of the first n barriers that are exactly 0 (`zero`,
  `zero_base` for phi*): identity steps of the walk, swapped Net2Net
  replicas or dead neurons, which count as edges at any lambda. Where lambda
  is 0 (q at most phi*'s exact-zero share, `lambda_zero`), M counts those and
  nothing of connectivity.
  """
  r = _metric(_prefix(barriers, n), _prefix(base_barriers, n), q, np.float64(tol))
  return {"q": q, "n": n, **{k: v.item() for k, v in r.items()}}


def grid(barriers, base_barriers, qs=Q_GRID, ns=N_GRID) -> list[dict]:
  """manifold_metric for every (q, n); n larger than the set is an error."""
  return [manifold_metric(barriers, base_barriers, q, n) for n in ns for q in qs]


def _prefix(barriers, n: int):
  b = np.asarray(barriers, dtype=np.float64)
  if not 0 < n <= b.shape[-1]:
    raise ValueError(
        f"n = {n} barriers asked for, but only {b.shape[-1]} were "
        "computed; raise metric.n_max in the config or lower n"
    )
  return b[..., :n]


SET_KEYS = ["setting", "expansion", "seed", "epoch", "group", "walk"]


def _sets(barriers: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
  """One row per barrier set (SET_KEYS), its barriers by node as columns; and
  each set's resolution (0 where the table has none)."""
  sets = barriers.pivot_table(
      index=SET_KEYS, columns="node", values="barrier", aggfunc="first"
  ).sort_index(axis=1)
  if "resolution" not in barriers:
    return sets, pd.Series(0.0, index=sets.index)
  return sets, barriers.groupby(SET_KEYS).resolution.first().reindex(sets.index)


def _grid_rows(sets: pd.DataFrame, reference: pd.DataFrame, tol, qs, ns) -> pd.DataFrame:
  """manifold_metric of every set against the set of `reference` (indexed
  like `sets`, one reference row per set) over the (q, n) grid, with
  tolerance `tol` per set, vectorized over the sets."""
  b, ref, tol = sets.to_numpy(np.float64), reference.to_numpy(np.float64), np.asarray(tol)
  out = [
      pd.DataFrame(
          {"q": q, "n": n, **_metric(_prefix(b, n), _prefix(ref, n), q, tol)}, index=sets.index
      )
      for n in ns
      for q in qs
  ]
  return pd.concat(out).reset_index()


def of_sets(barriers: pd.DataFrame, qs, ns) -> pd.DataFrame:
  """M of every candidate barrier set against phi*'s of its seed, group and
  walk, over the (q, n) grid.

  Args:
    barriers: barrier sets (columns SET_KEYS, node, barrier), phi*'s under
      expansion "base" at epoch 0, one per seed, group and walk.
    qs, ns: the grid.

  Returns:
    One row per (candidate set, q, n): SET_KEYS, q, n, lambda, m, m_base, M,
    zero, zero_base, lambda_zero (see `manifold_metric`; its tol is the
    larger resolution of the two sets, column `resolution` of `barriers`).
  """
  sets, tau = _sets(barriers)
  expansion = sets.index.get_level_values("expansion")
  base = sets[expansion == "base"].droplevel(["setting", "expansion", "epoch"])
  base_tau = tau[expansion == "base"].droplevel(["setting", "expansion", "epoch"])
  cand, cand_tau = sets[expansion != "base"], tau[expansion != "base"]
  if cand.empty:
    raise ValueError("no candidate barrier set")
  ref = pd.MultiIndex.from_arrays(
      [cand.index.get_level_values(k) for k in ("seed", "group", "walk")]
  )
  missing = ~ref.isin(base.index)
  if missing.any():
    raise ValueError(
        f"no barrier set of phi* for (seed, group, walk) " f"{list(ref[missing].unique()[:3])}"
    )
  tol = np.maximum(cand_tau.to_numpy(), base_tau.loc[ref].to_numpy())
  return _grid_rows(cand, base.loc[ref], tol, qs, ns)


def table(
    barriers: pd.DataFrame, gains: pd.DataFrame, qs, ns, first_group: str, hidden_groups
) -> pd.DataFrame:
  """The metric table of one setting: M_t over the (q, n) grid for every
  candidate checkpoint, neuron group and walk, with the run's gains beside it.

  Args:
    barriers: as `of_sets`.
    gains: `gain.gains` of the candidates' training logs.
    qs, ns: the grid.
    first_group: phi*'s first group, the one M_0 permutes.
    hidden_groups: phi*'s hidden-layer groups (all but BERT's heads).

  Returns:
    `of_sets`' rows, with first (the group is first_group) and hidden (it is
    a hidden-layer group), and from `gains` performance, val_acc, gain,
    sotl_e, gain_best.
  """
  rows = of_sets(barriers, qs, ns)
  rows = rows.assign(first=rows.group == first_group, hidden=rows.group.isin(list(hidden_groups)))
  outcome = gains.set_index(["expansion", "seed", "epoch"])
  runs = pd.MultiIndex.from_frame(rows[["expansion", "seed", "epoch"]])
  absent = ~runs.isin(outcome.index)
  if absent.any():
    raise ValueError(
        f"no training log row for (expansion, seed, epoch) " f"{list(runs[absent].unique()[:3])}"
    )
  o = outcome.reindex(runs)
  out = rows.assign(
      **{
          c: o[c].to_numpy() if c in o else np.nan
          for c in ("val_acc", "performance", "gain", "sotl_e", "gain_best")
      }
  )
  return out


def scratch_table(barriers: pd.DataFrame, qs, n: int) -> pd.DataFrame:
  """Figure 11 (i): M_t = m(theta_t) - m(theta_1) of a model trained from
  random initialisation, lambda the q-quantile of epoch 1's barrier set
  (at initialisation the manifold is vast: parameters lie on a high-loss
  surface, Appendix A.2.7).

  Args:
    barriers: the runs' barrier sets per (setting, seed, epoch, group, walk).

  Returns:
    One row per (setting, seed, epoch, group, walk, q): lambda, m, m_base, M,
    zero, zero_base, lambda_zero.
  """
  sets, tau = _sets(barriers)
  epoch = sets.index.get_level_values("epoch")
  first = sets[epoch == epoch.min()].droplevel(["setting", "expansion", "epoch"])
  first_tau = tau[epoch == epoch.min()].droplevel(["setting", "expansion", "epoch"])
  ref = pd.MultiIndex.from_arrays(
      [sets.index.get_level_values(k) for k in ("seed", "group", "walk")]
  )
  tol = np.maximum(tau.to_numpy(), first_tau.loc[ref].to_numpy())
  return _grid_rows(sets, first.loc[ref], tol, qs, [n]).drop(columns="expansion")
