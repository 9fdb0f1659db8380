"""Trains the base model phi* of one (setting, seed): image models until
early stopping on validation accuracy; BERT for a fixed number of epochs
from random initialisation, keeping every epoch (Figure 11's run)."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import jax
import pandas as pd

from manifold_metric import io, tasks, train

w, p = snakemake.wildcards, snakemake.params
seed, run = int(w.seed), f"base {w.setting} seed {w.seed}"
ds = tasks.load_dataset(snakemake.input.data)
arch = tasks.build_arch(p.model, ds)
variables = tasks.init(arch, jax.random.key(seed), ds)
if tasks.is_lm(arch):
  history, last, paths = [], {}, dict(zip(p.save, snakemake.output.scratch))

  def on_epoch(t, v, record):
    history.append(record)
    last["variables"] = v
    io.save_checkpoint(paths[t], arch, v, {**record, "seed": seed})

  tasks.run_epochs(arch, variables, ds, hp=p.train, seed=seed, epochs=p.base["epochs"],
                   run=run, on_epoch=on_epoch)
  best, perf = last["variables"], history[-1]["performance"]
else:
  best, history = train.fit_base(arch, variables, ds, hp=p.train, seed=seed,
                                 max_epochs=p.base["max_epochs"],
                                 patience=p.base["patience"], run=run)
  perf = max(h["performance"] for h in history)  # phi* is the best epoch, evaluated there
print(f"phi*: performance {perf:.4f}", file=sys.stderr)
io.write_table(pd.DataFrame(history).assign(setting=w.setting, seed=seed), snakemake.output.log)
io.save_checkpoint(snakemake.output.checkpoint, arch, best, {"performance": perf, "seed": seed})
