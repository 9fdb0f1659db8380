"""The metric table of one setting: M over the (q, n) grid, gains, SoTL-E."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import pandas as pd

from manifold_metric import io, metric

w, p = snakemake.wildcards, snakemake.params
barriers = pd.concat([io.read_table(f) for f in snakemake.input.barriers])
logs = pd.concat([io.read_table(f) for f in snakemake.input.logs])
logs = logs[logs.epoch.isin(p.epochs)].set_index(["expansion", "seed", "epoch"])
rows = []
for (expansion, seed, epoch), b in barriers.groupby(["expansion", "seed", "epoch"]):
  if expansion == "base":
    continue
  base = barriers[(barriers.expansion == "base") & (barriers.seed == seed)]
  log = logs.loc[(expansion, seed, epoch)]
  start = logs.loc[(expansion, seed, 0)].performance  # A(phi*), preserved at t = 0
  for r in metric.grid(b.barrier.to_numpy(), base.barrier.to_numpy(), p.q, p.n):
    rows.append({"setting": w.setting, "expansion": expansion, "seed": seed, "epoch": epoch,
                 **r, "val_acc": log.get("val_acc", float("nan")),
                 "performance": log.performance, "gain": log.performance - start,
                 "sotl_e": log.train_loss_sum})
table = pd.DataFrame(rows)
# G_T*: the best gain a candidate reaches within the T epochs.
table["gain_best"] = table.groupby(["expansion", "seed"]).gain.transform("max")
print(table.groupby(["expansion", "epoch"])[["M", "gain"]].mean(), file=sys.stderr)
io.write_table(table, snakemake.output[0])
