"""Net2Net-expands phi* into one candidate theta^(0); checks function preservation."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import jax

from manifold_metric import data, expansion, io, train

w = snakemake.wildcards
seed = int(w.seed)
ds = data.load_npz(snakemake.input.data)
arch, variables, meta = io.load_checkpoint(snakemake.input.base)
new_arch, new_vars = expansion.expand(arch, variables, snakemake.params.expansion,
                                      jax.random.key(seed))
acc = train.accuracy(new_arch, new_vars, ds["x_val"], ds["y_val"])
if abs(acc - meta["val_acc"]) > 1e-9:
  raise RuntimeError(f"expansion {w.expansion} of {snakemake.input.base} changed validation "
                     f"accuracy from {meta['val_acc']} to {acc}: not function-preserving")
print(f"{w.expansion}: {arch} -> {new_arch}, val_acc {acc:.4f} preserved", file=sys.stderr)
io.save_checkpoint(snakemake.output[0], new_arch, new_vars,
                   {**meta, "expansion": snakemake.params.expansion})
