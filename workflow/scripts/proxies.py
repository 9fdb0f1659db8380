"""Zero-cost proxies, size and width of phi* and of every candidate right
after expansion (t = 0, expanded here from phi*), every seed, on the
metric's batch."""

import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import pandas as pd

from manifold_metric import archs, checkpoints, expansion, proxies, tables, tracks

w, p = snakemake.wildcards, snakemake.params
ds = tracks.load_dataset(snakemake.input.data)
arch, phi, metas = checkpoints.load_stacked(snakemake.input.base)
batches = tracks.metric_batches(arch, ds, p.seeds, p.batch_size)
models = {
    "base": (arch, phi),
    **expansion.setting_candidates(arch, phi, metas, p.expansions, p.seeds, ds, p.train, w.setting),
}
rows = []
for name, (a, variables) in models.items():
  scores = proxies.score_all(a, variables, batches)
  size = tracks.param_count(checkpoints.model_of(variables))
  width = a.groups()[archs.first_group(a)]
  print(
      f"{name}: size {size}, width {width}, {pd.DataFrame(scores).mean().to_dict()}",
      file=sys.stderr,
  )
  rows.append(
      pd.DataFrame(
          {
              "setting": w.setting,
              "expansion": name,
              "seed": p.seeds,
              "epoch": 0,
              **scores,
              "size": size,
              "width": width,
          }
      )
  )
tables.write_table(pd.concat(rows, ignore_index=True), snakemake.output[0])
