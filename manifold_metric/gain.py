"""What a candidate gains by expansion (Section 4.1) and SoTL-E (Section 4.3).

G_t = A(theta^(t)) - A(phi*), the validation performance after t epochs of
training the expanded model minus the base's; G_T* = max over t in 1..T of
G_t, the best gain within the T epochs, read from the per-epoch training log
(not only the checkpointed epochs). SoTL-E, the sum of the training losses
of the epoch (Ru et al., 2021), is scored as its negative, as NASLib does:
a lower training loss predicts a better model, so higher scores predict
higher gains like every other score here.
"""

import numpy as np
import pandas as pd

KEYS = ["expansion", "seed", "epoch"]


def gains(logs: pd.DataFrame) -> pd.DataFrame:
  """G_t, G_T* and SoTL-E of every candidate run and epoch.

  Args:
    logs: the candidates' training logs, one row per (expansion, seed,
      epoch) with columns performance and train_loss_sum (and val_acc for
      classifiers); epoch 0 is the expanded model, whose performance is
      A(phi*) (the expansion preserves it).

  Returns:
    The same rows with gain (G_t), sotl_e (minus train_loss_sum; NaN at
    t = 0) and gain_best (G_T*, the max of G_t over epochs 1..T of the run).
  """
  missing = sorted(set(KEYS + ["performance", "train_loss_sum"]) - set(logs))
  if missing:
    raise ValueError(f"training logs lack {', '.join(missing)}")
  logs = logs.sort_values(KEYS).reset_index(drop=True)
  run = pd.MultiIndex.from_frame(logs[["expansion", "seed"]])
  start = logs[logs.epoch == 0].set_index(["expansion", "seed"]).performance
  if start.index.duplicated().any() or not run.isin(start.index).all():
    raise ValueError("every run's log needs exactly one epoch-0 row, A(phi*)")
  out = logs.assign(
      gain=logs.performance.to_numpy() - start.reindex(run).to_numpy(), sotl_e=-logs.train_loss_sum
  )
  trained = out.gain.where(out.epoch > 0)
  out["gain_best"] = trained.groupby([out.expansion, out.seed]).transform("max")
  if out.gain_best.isna().any():
    bad = out[out.gain_best.isna()][["expansion", "seed"]].drop_duplicates()
    raise ValueError(f"runs without a trained epoch: {bad.to_dict('records')}")
  return out


def paired_difference(gains_: pd.DataFrame) -> dict:
  """Best against worst candidate by mean G_T*, paired over seeds.

  Args:
    gains_: rows with expansion, seed, gain_best (any epochs; one value per
      run is used).

  Returns:
    best, worst (expansion names), diff (mean over seeds of the per-seed
    difference of G_T*), se (its standard error), seeds.
  """
  g = gains_.drop_duplicates(["expansion", "seed"]).pivot(
      index="seed", columns="expansion", values="gain_best"
  )
  means = g.mean()
  best, worst = means.idxmax(), means.idxmin()
  d = (g[best] - g[worst]).dropna()
  se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
  return {"best": best, "worst": worst, "diff": float(d.mean()), "se": se, "seeds": len(d)}
