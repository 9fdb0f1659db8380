"""Zero-cost proxies and size of phi* and of every candidate right after
expansion (t = 0), on the metric's batch."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import pandas as pd

from manifold_metric import io, protocol, tracks

ds = tracks.load_dataset(snakemake.input.data)
rows = []
for name, path in snakemake.input.items():
  if name == "data":
    continue
  expansion, seed = name.rsplit("_seed", 1)
  arch, variables, _ = io.load_checkpoint(path)
  scores = protocol.scores(arch, variables, ds, seed=int(seed),
                           batch_size=snakemake.params.batch_size)
  print(f"{expansion} seed {seed}: {scores}", file=sys.stderr)
  rows.append({"setting": snakemake.wildcards.setting, "expansion": expansion,
               "seed": int(seed), "epoch": 0, **scores})
io.write_table(pd.DataFrame(rows), snakemake.output[0])
