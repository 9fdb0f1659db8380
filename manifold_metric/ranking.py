"""The method's prediction, made before any candidate is trained: rank the
candidate expansions of phi* by M_0 = M(theta^(0), phi*), the mean over
seeds, with their size and the zero-cost proxies beside it."""

import numpy as np
import pandas as pd

from manifold_metric import metric


def rank(barriers: pd.DataFrame, scores: pd.DataFrame, q: float, n: int) -> pd.DataFrame:
  """Candidates by mean M_0 over seeds, highest first.

  Args:
    barriers: epoch-0 barrier sets (columns expansion, seed, node, barrier)
      of phi* (expansion "base") and of every candidate theta^(0), per seed.
    scores: per (expansion, seed) the candidate's size and proxies (the
      proxies table at t = 0); phi*'s rows are ignored.
    q, n: the threshold quantile and number of nodes of M.

  Returns:
    One row per candidate: rank (1 = largest M_0), expansion, M0 (mean over
    seeds, percent), M0_sd, seeds, then the mean over seeds of every column
    of `scores` (size, the proxies).
  """
  barriers = barriers[barriers.epoch == 0]
  base = {s: b.sort_values("node").barrier.to_numpy()
          for s, b in barriers[barriers.expansion == "base"].groupby("seed")}
  rows = []
  for (expansion, seed), b in barriers[barriers.expansion != "base"].groupby(
      ["expansion", "seed"]):
    if seed not in base:
      raise ValueError(f"no barrier set of phi* for seed {seed}")
    m = metric.manifold_metric(b.sort_values("node").barrier.to_numpy(), base[seed], q, n)
    rows.append({"expansion": expansion, "seed": seed, "M0": m["M"]})
  if not rows:
    raise ValueError("no candidate barrier set at epoch 0")
  per_seed = pd.DataFrame(rows)
  cols = [c for c in scores.columns if c not in ("setting", "expansion", "seed", "epoch")]
  other = scores[scores.expansion != "base"].groupby("expansion")[cols].mean()
  table = per_seed.groupby("expansion").M0.agg(M0="mean", M0_sd=lambda v: v.std(ddof=1),
                                               seeds="count").join(other)
  table = table.sort_values("M0", ascending=False, kind="stable").reset_index()
  return table.assign(rank=np.arange(1, len(table) + 1))[["rank", *table.columns]]


def markdown(table: pd.DataFrame, setting: str, q: float, n: int) -> str:
  """The ranking as a Markdown document a user reads before training."""
  head = (f"# {setting}: candidate expansions ranked by the manifold metric\n\n"
          f"M_0 = M(theta^(0), phi*) in percent (q = {q:g}, n = {n}), mean and standard "
          f"deviation over {int(table.seeds.max())} seeds, computed on phi* and the expanded "
          "models before any training. A larger M_0 predicts a larger gain after training. "
          "Size (parameters) and the zero-cost proxies are shown beside it, means over "
          "seeds; compare the ranking with the one size alone gives.\n\n")
  return head + table.to_markdown(index=False, floatfmt=".4g") + "\n"
