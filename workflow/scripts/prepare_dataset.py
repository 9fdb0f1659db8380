"""Loads a dataset from its source, splits and standardizes it, caches as .npz."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from manifold_metric import data

spec = snakemake.params.spec
ds = data.load(spec["source"], spec.get("path"), val_fraction=spec.get("val_fraction", 0.2),
               split_seed=spec.get("split_seed", 0), limit=spec.get("limit"))
print(f"{snakemake.wildcards.dataset}: {len(ds['x_train'])} train, {len(ds['x_val'])} "
      f"val, shape {ds['x_train'].shape[1:]}, {ds['num_classes']} classes", file=sys.stderr)
data.save(ds, snakemake.output[0])
