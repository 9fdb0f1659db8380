"""Rank correlations between metrics and the performance gain (Section 4.2, A.2.4).

Kendall tau (tau-b, ties-corrected, as scipy and White et al., 2021), with
Spearman and Pearson alongside; computed across the candidate expansions of
one (setting, seed, epoch) group, then averaged over seeds.
"""

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

# scipy.stats is imported where it is used: it takes 0.8 s, which the figure
# jobs that only draw (through `plots`) would pay for nothing.
_FUNCS = {"kendall": "kendalltau", "spearman": "spearmanr", "pearson": "pearsonr"}
METHODS = tuple(_FUNCS)

# Scores agreeing to this fraction of the group's largest magnitude are ties:
# float32 rounding orders scores that are equal in exact arithmetic (Jacov is
# the same for every function-preserving expansion of one base).
TIE_RTOL = 1e-5


def _ties(a):
  """`a` rounded to TIE_RTOL of its largest magnitude."""
  scale = np.max(np.abs(a))
  return a if scale == 0 or not np.isfinite(scale) else np.round(a / (scale * TIE_RTOL))


def rank_correlation(a, b, method: str = "kendall") -> float:
  """Correlation of two equally long 1-d sequences.

  Values that agree to TIE_RTOL of the sequence's largest magnitude are ties.

  Args:
    a, b: the two sequences (e.g. a score and G_T* across candidates).
    method: "kendall" (tau-b), "spearman" or "pearson".

  Returns:
    The correlation; NaN, without warnings, when either has fewer than 2
    distinct values (a constant input, a single candidate) or contains NaN.
  """
  if method not in _FUNCS:
    raise ValueError(f"unknown correlation method {method!r}; expected one of {METHODS}")
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.ndim != 1 or a.shape != b.shape:
    raise ValueError(f"need two 1-d sequences of equal length, got shapes {a.shape}, {b.shape}")
  if len(a) < 2 or np.isnan(a).any() or np.isnan(b).any():
    return math.nan
  ranked_a, ranked_b = _ties(a), _ties(b)
  if min(len(set(ranked_a)), len(set(ranked_b))) < 2:
    return math.nan
  if method != "pearson":
    a, b = ranked_a, ranked_b
  from scipy import stats

  return float(getattr(stats, _FUNCS[method])(a, b).statistic)


def correlations(
    df: pd.DataFrame,
    score_cols: Sequence[str],
    target_col: str,
    by: Sequence[str] = ("setting", "seed", "epoch"),
    methods: Sequence[str] = METHODS,
) -> pd.DataFrame:
  """Per group of `by` (rows = candidate expansions), the correlation of each
  score column with `target_col` across the group's rows.

  Long format: the `by` columns, metric, method, value.
  """
  by = list(by)
  rows = []
  for key, group in df.groupby(by, sort=False, dropna=False):
    for metric in score_cols:
      for method in methods:
        value = rank_correlation(group[metric], group[target_col], method)
        rows.append({**dict(zip(by, key)), "metric": metric, "method": method, "value": value})
  return pd.DataFrame(rows, columns=[*by, "metric", "method", "value"])


BASELINES = ("size", "width")  # what a user can count for free
RESAMPLES = 10_000


def _bootstrap(values: np.ndarray, level: float) -> tuple[float, float]:
  """The `level` percentile-bootstrap interval of the mean of `values`
  (resampling seeds, RESAMPLES times, a fixed random state); NaN below 2
  values, the value itself when all are equal."""
  if len(values) < 2:
    return math.nan, math.nan
  if np.all(values == values[0]):
    return float(values[0]), float(values[0])
  from scipy import stats

  ci = stats.bootstrap(
      (values,),
      np.mean,
      confidence_level=level,
      n_resamples=RESAMPLES,
      method="percentile",
      vectorized=True,
      rng=np.random.default_rng(0),
  )
  return float(ci.confidence_interval.low), float(ci.confidence_interval.high)


def summarize(
    corr_df: pd.DataFrame, level: float = 0.95, baselines: Sequence[str] = BASELINES
) -> pd.DataFrame:
  """Over seeds, per combination of the other columns (setting, metric,
  method, epoch): mean and std (ddof=1) of the defined values, count (seeds
  where the correlation is defined), seeds (all seeds), and the `level`
  percentile-bootstrap interval of the mean (ci_low, ci_high; NaN below 2
  defined values).

  And per baseline b (size, width; where the table has it), the paired
  per-seed difference of each score's correlation minus b's (b's at epoch 0,
  the only epoch it is scored at), over the seeds where both are defined:
  minus_<b> (mean), minus_<b>_low and minus_<b>_high (its `level` paired
  bootstrap interval: seeds resampled with both correlations), minus_<b>_count.
  An interval above 0 says the score ranked the candidates better than b.
  """
  keys = [c for c in corr_df.columns if c not in ("seed", "value")]
  rows = []
  base = {
      b: corr_df[(corr_df.metric == b) & (corr_df.epoch == 0)]
      .set_index(["setting", "method", "seed"])
      .value
      for b in baselines
      if b in set(corr_df.metric)
  }
  for key, group in corr_df.groupby(keys, sort=False, dropna=False):
    values = group.value.to_numpy(np.float64)
    defined = values[np.isfinite(values)]
    row = dict(zip(keys, key))
    low, high = _bootstrap(defined, level)
    row.update(
        mean=defined.mean() if len(defined) else math.nan,
        std=defined.std(ddof=1) if len(defined) > 1 else math.nan,
        count=len(defined),
        seeds=len(values),
        ci_low=low,
        ci_high=high,
    )
    for b, tau in base.items():
      other = tau.reindex(
          pd.MultiIndex.from_arrays([group.setting, group.method, group.seed])
      ).to_numpy(np.float64)
      d = values - other
      d = d[np.isfinite(d)]
      low, high = _bootstrap(d, level)
      row.update(
          {
              f"minus_{b}": d.mean() if len(d) else math.nan,
              f"minus_{b}_low": low,
              f"minus_{b}_high": high,
              f"minus_{b}_count": len(d),
          }
      )
    rows.append(row)
  return pd.DataFrame(rows)


def score_table(
    metrics: pd.DataFrame, scores: pd.DataFrame | None, main_q: float, main_n: int
) -> pd.DataFrame:
  """Every score of every candidate beside its G_T*, one row per (setting,
  expansion, seed, epoch).

  Args:
    metrics: `metric.table` of one setting.
    scores: per (setting, expansion, seed) at epoch 0, the zero-cost proxies,
      size (the parameter count) and width (the permuted layer's neurons);
      None if there are none.
    main_q, main_n: the manifold metric's main (q, n).

  Returns:
    Columns setting, expansion, seed, epoch, gain_best, manifold_q<q> (M_t of
    the first group at n = main_n, the paper's walk, per q), manifold (at
    main_q), manifold_all (the mean over hidden groups of M at main_q), sotl_e,
    and at epoch 0 the proxies, size and width (NaN at other epochs: they are
    scored once).
  """
  keys = ["setting", "expansion", "seed", "epoch"]
  main = metrics[(metrics.n == main_n) & (metrics.walk == "paper")]
  first = main[main["first"]]
  wide = first.pivot_table(index=keys, columns="q", values="M")
  wide.columns = [f"manifold_q{q:g}" for q in wide.columns]
  wide["manifold"] = wide[f"manifold_q{main_q:g}"]
  every = main[main.hidden & (main.q == main_q)]
  wide["manifold_all"] = every.groupby(keys).M.mean()
  outcome = first.drop_duplicates(keys).set_index(keys)[["sotl_e", "gain_best"]]
  table = wide.join(outcome).reset_index()
  if scores is not None:
    table = table.merge(scores.query("expansion != 'base'").assign(epoch=0), on=keys, how="left")
  return table


def setting_correlations(table: pd.DataFrame, once: Sequence[str] = ()) -> pd.DataFrame:
  """Correlation of every score of `score_table` with G_T* across the
  candidates, per (setting, seed, epoch).

  Args:
    table: `score_table`'s output.
    once: the scores computed only at epoch 0 (proxies, size, width):
      correlated there only.

  Returns:
    `correlations`' long format. NaN values are undefined correlations (a
    score or G_T* constant across the candidates of a seed), kept so that
    summaries count them.
  """
  keys = ["setting", "expansion", "seed", "epoch"]
  every = [c for c in table.columns if c not in [*keys, "gain_best", *once]]
  return pd.concat(
      [
          correlations(table, every, "gain_best"),
          correlations(table[table.epoch == 0], list(once), "gain_best"),
      ],
      ignore_index=True,
  )


def sensitivity(metrics: pd.DataFrame) -> pd.DataFrame:
  """Kendall tau of M_0 (the first group) with G_T* over the whole (q, n)
  grid, for each walk (Figures 6, 8).

  Returns:
    Columns setting, seed, epoch (0), walk, method, value, q, n, lambda_zero
    (lambda is 0 on that seed: M counts exact zeros there, see
    `metric.manifold_metric`).
  """
  keys = ["setting", "expansion", "seed", "epoch"]
  t0 = metrics[(metrics.epoch == 0) & metrics["first"]]
  out = []
  for walk, t in t0.groupby("walk", sort=False):
    wide = t.pivot_table(index=keys, columns=["q", "n"], values="M")
    wide.columns = [f"{q:g}|{n}" for q, n in wide.columns]
    grid = wide.join(t.drop_duplicates(keys).set_index(keys)[["gain_best"]]).reset_index()
    sens = correlations(
        grid, [c for c in grid.columns if "|" in str(c)], "gain_best", methods=("kendall",)
    )
    qn = sens.metric.str.split("|", expand=True)
    sens = sens.assign(walk=walk, q=qn[0].astype(float), n=qn[1].astype(int)).drop(columns="metric")
    zero = t.groupby(["seed", "q", "n"]).lambda_zero.any().rename("lambda_zero").reset_index()
    out.append(sens.merge(zero, on=["seed", "q", "n"], how="left"))
  return pd.concat(out, ignore_index=True)
