"""Figure 4: the ablations (every conv widened, depth), G_t and M_t over
training, one column per setting."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import matplotlib.pyplot as plt

from manifold_metric import io, plots

p = snakemake.params
tables = [io.read_table(f) for f in snakemake.input]
fig, axes = plt.subplots(2, len(tables), figsize=(4 * len(tables), 6), squeeze=False)
for (ax_g, ax_m), t in zip(axes.T, tables):
  plots.gain_and_metric(ax_g, ax_m, t, p.main_q, p.main_n)
fig.tight_layout()
plots.save(fig, snakemake.output)
