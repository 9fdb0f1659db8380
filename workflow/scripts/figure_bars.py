"""Figures 2 and 7: correlation of every score at t = 0 with G_T*, per
setting, bars with the standard deviation over seeds."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from manifold_metric import correlation, io, plots

METRICS = ["manifold", "gradnorm", "jacov", "snip", "grasp", "synflow"]
LABELS = {"manifold": "Manifold $M_0$", "gradnorm": "GradNorm", "jacov": "Jacov",
          "snip": "SNIP", "grasp": "GraSP", "synflow": "SynFlow"}
corr = pd.concat([io.read_table(f) for f in snakemake.input], ignore_index=True)
summary = correlation.summarize(corr.query("epoch == 0 and metric in @METRICS"))
settings = list(dict.fromkeys(corr.setting))
methods = snakemake.params.methods
fig, axes = plt.subplots(len(methods), 1, figsize=(1.8 * len(settings) + 3, 3 * len(methods)),
                         squeeze=False)
width = 0.8 / len(METRICS)
for ax, method in zip(axes[:, 0], methods):
  s = summary[summary.method == method].set_index(["setting", "metric"])
  for i, m in enumerate(METRICS):
    mean = [s["mean"].get((st, m), np.nan) for st in settings]
    std = [s["std"].get((st, m), np.nan) for st in settings]
    ax.bar(np.arange(len(settings)) + (i - len(METRICS) / 2 + 0.5) * width, mean, width,
           yerr=std, capsize=2, label=LABELS[m])
  ax.set_xticks(np.arange(len(settings)), settings)
  ax.axhline(0, color="gray", lw=0.5)
  ax.set(ylabel=f"{method.capitalize()} correlation with $G_T^*$", ylim=(-1.05, 1.05))
axes[0, 0].legend(ncol=len(METRICS), fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0))
fig.tight_layout()
plots.save(fig, snakemake.output)
