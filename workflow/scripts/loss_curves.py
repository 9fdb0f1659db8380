"""Figure 1's data: the loss along linear paths between consecutive permuted
minima of the base model and of the widened, trained candidates."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import jax
import numpy as np
import pandas as pd

from manifold_metric import barrier, data, io, models, permutations

p = snakemake.params
ds = data.load_npz(snakemake.input.data)
alphas = np.linspace(0.0, 1.0, p.alphas)
rows = []
for name, paths in snakemake.input.items():
  if name == "data":
    continue
  for seed, path in zip(p.seeds, paths):
    arch, variables, _ = io.load_checkpoint(path)
    batch = data.training_batch(ds, seed, p.batch_size)
    spec, probe = models.first_group(arch), models.probe(arch)
    nodes = permutations.random_walk(jax.random.key(seed), spec.size, p.pairs)
    loss = jax.jit(lambda v: probe.head(v, probe.stem(v, batch), batch))
    for i in range(p.pairs):
      va, vb = (permutations.permute(spec, variables, nodes[j]) for j in (i + 1, i))
      curve = np.asarray(barrier.loss_curve(loss, va, vb, alphas))
      rows.append(pd.DataFrame({"model": name, "width": spec.size, "seed": seed,
                                "pair": i, "alpha": alphas, "loss": curve}))
    print(f"{name} seed {seed}: width {spec.size}", file=sys.stderr)
io.write_table(pd.concat(rows, ignore_index=True), snakemake.output[0])
