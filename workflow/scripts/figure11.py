"""Figure 11: (i) the manifold size of a BERT trained from random
initialisation, relative to epoch 1, per q; (ii) M_t of the expanded BERTs
with attention heads permuted instead of FFN neurons."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import matplotlib.pyplot as plt

from manifold_metric import io, plots

p = snakemake.params
pairs = list(zip(snakemake.input.scratch, snakemake.input.heads))
fig, axes = plt.subplots(len(pairs), 2, figsize=(9, 3.2 * len(pairs)), squeeze=False)
for (scratch_path, heads_path), (ax_s, ax_h) in zip(pairs, axes):
  scratch = io.read_table(scratch_path)
  for q, t in scratch.groupby("q"):
    s = t.groupby("epoch").M.agg(["mean", "std"])
    ax_s.errorbar(s.index, s["mean"], s["std"], capsize=2, label=f"q={q:g}")
  heads = io.read_table(heads_path)
  heads = heads[(heads.q == p.main_q) & (heads.n == p.main_n)]
  for expansion, t in heads.groupby("expansion", sort=False):
    s = t.groupby("epoch").M.agg(["mean", "std"])
    ax_h.errorbar(s.index, s["mean"], s["std"], capsize=2, label=expansion)
  setting = scratch.setting.iloc[0]
  ax_s.set(title=f"{setting}: from random init, $M_t$ vs epoch 1", xlabel="epoch t")
  ax_h.set(title=f"{setting}: heads permuted, $M_t$ (q={p.main_q})", xlabel="epoch t")
  ax_s.legend(fontsize=7)
  ax_h.legend(fontsize=7)
fig.tight_layout()
plots.save(fig, snakemake.output)
