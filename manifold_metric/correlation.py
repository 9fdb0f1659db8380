"""Rank correlations between metrics and the performance gain (Section 4.2, A.2.4).

Kendall tau (tau-b, ties-corrected, as scipy and White et al., 2021), with
Spearman and Pearson alongside; computed across the candidate expansions of
one (setting, seed, epoch) group, then averaged over seeds.
"""

import math
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

_FUNCS = {"kendall": stats.kendalltau, "spearman": stats.spearmanr,
          "pearson": stats.pearsonr}
METHODS = tuple(_FUNCS)


def rank_correlation(a, b, method: str = "kendall") -> float:
  """Correlation of two equally long 1-d sequences.

  NaN, without warnings, when either has fewer than 2 distinct values
  (a constant input, a single candidate) or contains NaN.
  """
  if method not in _FUNCS:
    raise ValueError(f"unknown correlation method {method!r}; expected one of {METHODS}")
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.ndim != 1 or a.shape != b.shape:
    raise ValueError(f"need two 1-d sequences of equal length, got shapes {a.shape}, {b.shape}")
  if np.isnan(a).any() or np.isnan(b).any() or min(len(set(a)), len(set(b))) < 2:
    return math.nan
  return float(_FUNCS[method](a, b).statistic)


def correlations(df: pd.DataFrame, score_cols: Sequence[str], target_col: str,
                 by: Sequence[str] = ("setting", "seed", "epoch"),
                 methods: Sequence[str] = METHODS) -> pd.DataFrame:
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


def summarize(corr_df: pd.DataFrame) -> pd.DataFrame:
  """Mean and std (ddof=1) over seeds, skipping NaN, per combination of the
  other columns (setting, metric, method, epoch); count = non-NaN values."""
  keys = [c for c in corr_df.columns if c not in ("seed", "value")]
  grouped = corr_df.groupby(keys, sort=False, dropna=False)["value"]
  return grouped.agg(mean="mean", std=lambda v: v.std(ddof=1), count="count").reset_index()
