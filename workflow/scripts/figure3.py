"""Figures 3 and 5: G_t, M_t and the Kendall tau between M_t (and SoTL-E)
and G_T* across epochs, one row per setting."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import matplotlib.pyplot as plt

from manifold_metric import correlation, io, plots

p = snakemake.params
rows = list(zip(snakemake.input.metrics, snakemake.input.correlations))
fig, axes = plt.subplots(len(rows), 3, figsize=(11, 3 * len(rows)), squeeze=False)
for (metrics_path, corr_path), (ax_g, ax_m, ax_c) in zip(rows, axes):
  plots.gain_and_metric(ax_g, ax_m, io.read_table(metrics_path), p.main_q, p.main_n)
  summary = correlation.summarize(io.read_table(corr_path)).query("method == 'kendall'")
  for name, s in summary.groupby("metric"):
    if name == "sotl_e":
      label = "SoTL-E"
    elif name.startswith("manifold_q"):
      label = f"$M_t$, q={name[len('manifold_q'):]}"
    else:  # the main q again, or a zero-cost proxy (t = 0 only)
      continue
    ax_c.errorbar(s.epoch, s["mean"], s["std"], capsize=2, label=label)
  ax_c.set(title=r"Kendall $\tau$ with $G_T^*$", xlabel="epoch t", ylim=(-1.05, 1.05))
  ax_c.axhline(0, color="gray", lw=0.5)
  ax_c.legend(fontsize=7)
fig.tight_layout()
plots.save(fig, snakemake.output)
