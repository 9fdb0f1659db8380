"""The method's prediction, made before any candidate is trained: rank the
candidate expansions of phi* by M_0 = M(theta^(0), phi*), the mean over
seeds, with what a user can count for free (size, the permuted layer's
width) and the zero-cost proxies beside it; and, once the candidates are
trained, how that ranking fared."""

import numpy as np
import pandas as pd

from manifold_metric import metric


def rank(
    barriers: pd.DataFrame, scores: pd.DataFrame, q: float, n: int, first_group: str, hidden_groups
) -> pd.DataFrame:
  """Candidates by mean M_0 over seeds, highest first.

  Args:
    barriers: epoch-0 barrier sets (columns of `metric.of_sets`) of phi*
      (expansion "base") and of every candidate theta^(0), per seed.
    scores: per (expansion, seed) the candidate's size, width and proxies
      (the proxies table at t = 0); phi*'s rows are ignored.
    q, n: the threshold quantile and number of nodes of M.
    first_group: the group M_0 permutes.
    hidden_groups: the groups whose mean M is M0_all.

  Returns:
    One row per candidate: rank (1 = largest M_0), expansion, M0 (mean over
    seeds, percent), M0_sd, M0_all (mean over seeds of the mean over hidden
    groups of M), seeds, then the mean over seeds of every column of
    `scores` (size, width, the proxies).
  """
  m = metric.of_sets(barriers[(barriers.epoch == 0) & (barriers.walk == "paper")], [q], [n])
  first = m[m.group == first_group].set_index(["expansion", "seed"]).M
  every = m[m.group.isin(list(hidden_groups))].groupby(["expansion", "seed"]).M.mean()
  per_seed = pd.DataFrame({"M0": first, "M0_all": every}).reset_index()
  cols = [c for c in scores.columns if c not in ("setting", "expansion", "seed", "epoch")]
  other = scores[scores.expansion != "base"].groupby("expansion")[cols].mean()
  table = (
      per_seed.groupby("expansion")
      .agg(
          M0=("M0", "mean"),
          M0_sd=("M0", lambda v: v.std(ddof=1)),
          M0_all=("M0_all", "mean"),
          seeds=("M0", "count"),
      )
      .join(other)
  )
  table = table.sort_values("M0", ascending=False, kind="stable").reset_index()
  return table.assign(rank=np.arange(1, len(table) + 1))[["rank", *table.columns]]


def markdown(table: pd.DataFrame, setting: str, q: float, n: int) -> str:
  """The ranking as a Markdown document a user reads before training."""
  head = (
      f"# {setting}: candidate expansions ranked by the manifold metric\n\n"
      f"M_0 = M(theta^(0), phi*) in percent (q = {q:g}, n = {n}, the first layer's "
      f"neurons permuted), mean and standard deviation over {int(table.seeds.max())} seeds, "
      "computed on phi* and the expanded models before any training. A larger M_0 "
      "predicts a larger gain after training. M0_all is the mean of M over every hidden "
      "layer of phi* (a Net2Net widening of other layers is invisible to each layer's "
      "M, and so is a deepening by identity layers, except one after a CNN's last conv, "
      "ahead of its max-pool). Beside it, "
      "what a user can count for free: size (parameters) and width (neurons of the "
      "permuted layer of theta^(0)), and the zero-cost proxies, means over seeds. "
      "Compare the ranking with the one size or width alone gives: a score earns its cost "
      f"only where it ranks better than those (see {setting}.outcome.md once the "
      "candidates are trained).\n\n"
  )
  return head + table.to_markdown(index=False, floatfmt=".4g") + "\n"


# The scores of an outcome page, in order: the method, its all-layer
# variant, the free baselines, the proxies.
OUTCOME_SCORES = (
    "manifold",
    "manifold_all",
    "size",
    "width",
    "gradnorm",
    "snip",
    "grasp",
    "synflow",
    "jacov",
)


def _interval(mean, low, high, count, seeds) -> str:
  if not count:
    return "undefined"
  text = f"{mean:+.2f}" + (f" [{low:+.2f}, {high:+.2f}]" if np.isfinite(low) else "")
  return text + (f" ({int(count)}/{int(seeds)} seeds)" if count < seeds else "")


def outcome_markdown(summary: pd.DataFrame, setting: str) -> str:
  """How the ranking before training fared: per score, Kendall tau at t = 0
  with G_T* (mean over seeds, 95% bootstrap interval) and its paired
  difference to size's and to width's.

  Args:
    summary: `correlation.summarize` of the setting's correlations.
    setting: its name.
  """
  s = summary[
      (summary.setting == setting) & (summary.method == "kendall") & (summary.epoch == 0)
  ].set_index("metric")
  rows = []
  for m in (m for m in OUTCOME_SCORES if m in s.index):
    r = s.loc[m]
    row = {
        "score": m,
        "tau(score, G_T*)": _interval(r["mean"], r.ci_low, r.ci_high, r["count"], r.seeds),
    }
    for b in ("size", "width"):
      if f"minus_{b}" in r:
        row[f"tau - tau({b})"] = _interval(
            r[f"minus_{b}"],
            r[f"minus_{b}_low"],
            r[f"minus_{b}_high"],
            r[f"minus_{b}_count"],
            r.seeds,
        )
    rows.append(row)
  head = (
      f"# {setting}: how the ranking before training fared\n\n"
      "Kendall tau at t = 0 of each score with G_T* across the candidates, mean over seeds "
      "with its 95% percentile-bootstrap interval (seeds resampled); then the paired "
      "per-seed difference to the tau of size (parameters) and of width (neurons of the "
      "permuted layer), what a user can count for free: an interval above 0 says the score "
      "ranked the candidates better than that baseline, one that contains 0 says it did "
      "not tell them apart from it. 'undefined': the score, the baseline or G_T* is "
      "constant across the candidates on every seed.\n\n"
  )
  return head + pd.DataFrame(rows).to_markdown(index=False) + "\n"
