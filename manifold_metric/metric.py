"""The manifold metric: m(theta, lambda, n) = e / n and M (Equation 2).

Everything here is a cheap reduction over barrier sets computed once by
`barrier.barrier_set`: the whole (q, n) grid of Appendix A.2.2 comes from
prefixes B[:n] of one set per checkpoint.
"""

import numpy as np

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
