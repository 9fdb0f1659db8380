"""Barrier sets B = {|b_i|} (Algorithm 1) of every checkpoint of one run."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import time

import jax
import numpy as np
import pandas as pd

from manifold_metric import barrier, io, permutations, tasks

w, p = snakemake.wildcards, snakemake.params
seed = int(w.seed)
ds = tasks.load_dataset(snakemake.input.data)
ckpts = {int(k[len("epoch"):]): v for k, v in snakemake.input.items() if k.startswith("epoch")}
rows, start = [], time.time()
for i, (epoch, path) in enumerate(sorted(ckpts.items()), 1):
  arch, variables, _ = io.load_checkpoint(path)
  probe, spec = tasks.probe_and_spec(arch, p.group)
  batch = tasks.metric_batch(arch, ds, seed, p.batch_size)
  # One walk per run: every epoch of a candidate is probed with the same nodes.
  nodes = permutations.random_walk(jax.random.key(seed), spec.size, p.n)
  b = np.asarray(barrier.barrier_set(probe, spec, variables, batch, nodes, chunk=p.chunk))
  if not np.all(np.isfinite(b)):
    raise RuntimeError(f"non-finite barriers for {path}: the checkpoint is diverged")
  rows.append(pd.DataFrame({"setting": w.setting, "model": arch["kind"],
                            "expansion": w.expansion, "seed": seed, "epoch": epoch,
                            "node": np.arange(1, p.n + 1), "barrier": b}))
  elapsed = time.time() - start
  print(f"epoch {epoch}: n={p.n} mean |b| {b.mean():.3g} ({elapsed:.0f}s, about "
        f"{elapsed / i * (len(ckpts) - i):.0f}s left)", file=sys.stderr)
io.write_table(pd.concat(rows, ignore_index=True), snakemake.output[0])
