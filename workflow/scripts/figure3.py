"""Figure 3: G_t, M_t and the Kendall tau between M_t (and SoTL-E) and G_T*
across epochs, one row per setting."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from manifold_metric import correlation, io

p = snakemake.params
rows = list(zip(snakemake.input.metrics, snakemake.input.correlations))
fig, axes = plt.subplots(len(rows), 3, figsize=(11, 3 * len(rows)), squeeze=False)
for (metrics_path, corr_path), (ax_g, ax_m, ax_c) in zip(rows, axes):
  table = io.read_table(metrics_path)
  main = table[(table.q == p.main_q) & (table.n == p.main_n)]
  setting = main.setting.iloc[0]
  for expansion, t in main.groupby("expansion", sort=False):
    stats = t.groupby("epoch")[["gain", "M"]].agg(["mean", "std"])
    line, = ax_g.plot(stats.index, 100 * stats["gain"]["mean"], label=expansion)
    best = stats["gain"]["mean"].idxmax()
    ax_g.plot(best, 100 * stats["gain"]["mean"][best], "*", color=line.get_color(), ms=10)
    ax_m.errorbar(stats.index, stats["M"]["mean"], stats["M"]["std"], capsize=2,
                  color=line.get_color())
  summary = correlation.summarize(io.read_table(corr_path)).query("method == 'kendall'")
  for name, s in summary.groupby("metric"):
    if name == "sotl_e":
      label = "SoTL-E"
    elif name.startswith("manifold_q"):
      label = f"$M_t$, q={name[len('manifold_q'):]}"
    else:  # the main q again, or a zero-cost proxy (t = 0 only)
      continue
    ax_c.errorbar(s.epoch, s["mean"], s["std"], capsize=2, label=label)
  ax_g.set(title=f"{setting}: gain $G_t$ (%)", xlabel="epoch t")
  ax_m.set(title=f"$M_t$ (q={p.main_q}, n={p.main_n})", xlabel="epoch t")
  ax_c.set(title=r"Kendall $\tau$ with $G_T^*$", xlabel="epoch t", ylim=(-1.05, 1.05))
  ax_c.axhline(0, color="gray", lw=0.5)
  ax_g.legend(fontsize=7)
  ax_c.legend(fontsize=7)
fig.tight_layout()
fig.savefig(snakemake.output.png, dpi=150)
fig.savefig(snakemake.output.pdf)
