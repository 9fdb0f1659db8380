"""Trains the base model phi* of one (setting, seed)."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import jax
import pandas as pd

from manifold_metric import io, tracks, train

w, p = snakemake.wildcards, snakemake.params
seed = int(w.seed)
ds = tracks.load_dataset(snakemake.input.data)
arch = tracks.build_arch(p.model, ds)
phi, history, perf = train.fit_base(arch, tracks.init(arch, jax.random.key(seed), ds), ds,
                                    hp=p.train, base=p.base, seed=seed,
                                    run=f"base {w.setting} seed {seed}")
print(f"phi*: performance {perf:.4f}", file=sys.stderr)
io.write_table(pd.DataFrame(history).assign(setting=w.setting, seed=seed), snakemake.output.log)
io.save_checkpoint(snakemake.output.checkpoint, arch, phi, {"performance": perf, "seed": seed})
