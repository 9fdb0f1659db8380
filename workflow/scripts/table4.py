"""Table 4: seconds to compute each score on one checkpoint with one batch,
measured in one process after compilation."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import time

import jax
import pandas as pd

from manifold_metric import barrier, data, io, models, permutations, proxies

p = snakemake.params
device = str(jax.devices()[0])
rows = []
for setting, dataset in p.datasets.items():
  ds = data.load_npz(f"results/data/{dataset}.npz")
  arch, variables, meta = io.load_checkpoint(snakemake.input[setting])
  batch = data.training_batch(ds, p.seed, p.batch_size)
  times = proxies.time_scores(arch, variables, batch)
  spec, probe = models.first_group(arch), models.probe(arch)
  nodes = permutations.random_walk(jax.random.key(p.seed), spec.size, p.n)
  run = lambda: barrier.barrier_set(probe, spec, variables, batch, nodes, chunk=p.chunk)
  run().block_until_ready()  # compile
  start = time.perf_counter()
  run().block_until_ready()
  times["manifold"] = time.perf_counter() - start
  print(f"{setting}: {times}", file=sys.stderr)
  rows += [{"setting": setting, "model": arch["kind"], "expansion": meta["expansion"],
            "metric": k, "seconds": v, "n": p.n, "batch_size": len(batch[0]),
            "device": device} for k, v in times.items()]
table = pd.DataFrame(rows).assign(expansion=lambda t: t.expansion.map(str))
io.write_table(table, snakemake.output.parquet)
wide = table.pivot(index="metric", columns="setting", values="seconds")
with io.atomic_path(snakemake.output.md) as tmp, open(tmp, "w") as f:
  f.write(f"Seconds per score on one checkpoint right after the largest expansion, "
          f"one batch of {p.batch_size}, n = {p.n}, on {device}.\n\n")
  f.write(wide.to_markdown(floatfmt=".4f") + "\n")
