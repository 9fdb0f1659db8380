"""Figures 6 and 8: Kendall tau of M_0 with G_T* over the (q, n) grid,
averaged over seeds, one heatmap per setting."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import matplotlib.pyplot as plt
import numpy as np

from manifold_metric import io, plots

tables = [io.read_table(f) for f in snakemake.input]
fig, axes = plt.subplots(1, len(tables), figsize=(4 * len(tables), 3.2), squeeze=False)
for ax, t in zip(axes[0], tables):
  grid = t.pivot_table(index="q", columns="n", values="value", aggfunc="mean")
  im = ax.imshow(grid.to_numpy(), cmap="RdBu", vmin=-1, vmax=1, origin="lower", aspect="auto")
  for (i, j), v in np.ndenumerate(grid.to_numpy()):
    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7)
  ax.set_xticks(range(grid.shape[1]), grid.columns)
  ax.set_yticks(range(grid.shape[0]), [f"{q:g}" for q in grid.index])
  ax.set(xlabel="n", ylabel="q", title=t.setting.iloc[0])
fig.colorbar(im, ax=axes[0].tolist(), label=r"Kendall $\tau$($M_0$, $G_T^*$)")
plots.save(fig, snakemake.output)
