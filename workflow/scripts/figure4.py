"""Figure 4: the ablations (every conv widened, depth), G_t and M_t over
training, one column per setting."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from manifold_metric import io

p = snakemake.params
tables = [io.read_table(f) for f in snakemake.input]
fig, axes = plt.subplots(2, len(tables), figsize=(4 * len(tables), 6), squeeze=False)
for (ax_g, ax_m), t in zip(axes.T, tables):
  main = t[(t.q == p.main_q) & (t.n == p.main_n)]
  for expansion, e in main.groupby("expansion", sort=False):
    stats = e.groupby("epoch")[["gain", "M"]].agg(["mean", "std"])
    line, = ax_g.plot(stats.index, 100 * stats["gain"]["mean"], label=expansion)
    best = stats["gain"]["mean"].idxmax()
    ax_g.plot(best, 100 * stats["gain"]["mean"][best], "*", color=line.get_color(), ms=10)
    ax_m.errorbar(stats.index, stats["M"]["mean"], stats["M"]["std"], capsize=2,
                  color=line.get_color(), label=expansion)
  ax_g.set(title=f"{t.setting.iloc[0]}: gain $G_t$ (%)", xlabel="epoch t")
  ax_m.set(title=f"$M_t$ (q={p.main_q}, n={p.main_n})", xlabel="epoch t")
  ax_g.legend(fontsize=7)
fig.tight_layout()
fig.savefig(snakemake.output.png, dpi=150)
fig.savefig(snakemake.output.pdf)
