"""Figure 11 (i): M_t = m(theta_t) - m(theta_1) of a BERT trained from random
initialisation, with lambda the q-quantile of epoch 1's barrier set."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import pandas as pd

from manifold_metric import io, metric

p = snakemake.params
rows = []
for path in snakemake.input:
  b = io.read_table(path)
  first = b[b.epoch == b.epoch.min()].barrier.to_numpy()
  for (setting, seed, epoch), e in b.groupby(["setting", "seed", "epoch"]):
    for q in p.q:
      rows.append({"setting": setting, "seed": seed, "epoch": epoch,
                   **metric.manifold_metric(e.barrier.to_numpy(), first, q, p.n)})
table = pd.DataFrame(rows)
print(table.groupby(["q", "epoch"]).M.mean().unstack(0), file=sys.stderr)
io.write_table(table, snakemake.output[0])
