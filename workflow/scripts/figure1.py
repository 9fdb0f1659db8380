"""Figure 1: loss along the linear path between permuted minima, per model."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import matplotlib.pyplot as plt

from manifold_metric import io, plots

curves = io.read_table(snakemake.input[0])
names = list(dict.fromkeys(curves.model))
fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 2.8), sharey=True)
for ax, name in zip(axes, names):
  c = curves[curves.model == name]
  stats = c.groupby("alpha").loss.agg(["mean", "std", "min", "max"])
  ax.fill_between(stats.index, stats["min"], stats["max"], alpha=0.2, label="range")
  ax.plot(stats.index, stats["mean"], label="mean")
  ax.set_title(f"{name} (width {c.width.iloc[0]})")
  ax.set_xlabel(r"$\alpha$")
axes[0].set_ylabel("training loss on the metric batch")
axes[0].legend()
fig.tight_layout()
plots.save(fig, snakemake.output)
