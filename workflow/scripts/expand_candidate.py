"""Net2Net-expands phi* into one candidate theta^(0); checks function preservation."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import jax

from manifold_metric import io, tasks

w, p = snakemake.wildcards, snakemake.params
ds = tasks.load_dataset(snakemake.input.data)
arch, variables, meta = io.load_checkpoint(snakemake.input.base)
new_arch, new_vars = tasks.expand(arch, variables, p.expansion, jax.random.key(int(w.seed)))
perf = tasks.performance(new_arch, new_vars, ds, p.train)
# Accuracy must match exactly; an MLM loss to float32 round-off.
tol = 1e-4 * abs(meta["performance"]) if tasks.is_lm(arch) else 0.0
if abs(perf - meta["performance"]) > tol:
  raise RuntimeError(f"expansion {w.expansion} of {snakemake.input.base} changed the "
                     f"validation performance from {meta['performance']} to {perf}: "
                     "it is not function-preserving")
print(f"{w.expansion}: {arch} -> {new_arch}, performance {perf:.6f} preserved",
      file=sys.stderr)
io.save_checkpoint(snakemake.output[0], new_arch, new_vars, {**meta, "expansion": p.expansion})
