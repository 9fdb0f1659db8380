"""Loads a dataset from its source, splits it and caches it as one .npz:
standardized images, or encoded fixed-length token sequences."""

import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from manifold_metric import data, text

spec = snakemake.params.spec
if spec["source"] == "wikitext":
  ds = text.prepare(
      spec["path"],
      text.load_vocab(snakemake.input[0]),
      train_split=spec["train_split"],
      val_split=spec["val_split"],
      seq_len=spec["seq_len"],
      max_tokens=spec.get("max_tokens"),
  )
  summary = f"{len(ds['train'])} train, {len(ds['val'])} val sequences of {spec['seq_len']}"
else:
  ds = data.load(
      spec["source"],
      spec["path"],
      val_fraction=spec.get("val_fraction", 0.2),
      split_seed=spec.get("split_seed", 0),
      limit=spec.get("limit"),
      pool_factor=spec.get("pool", 1),
  )
  summary = (
      f"{len(ds['x_train'])} train, {len(ds['x_val'])} val, shape "
      f"{ds['x_train'].shape[1:]}, {ds['num_classes']} classes"
  )
print(f"{snakemake.wildcards.dataset}: {summary}", file=sys.stderr)
data.save(ds, snakemake.output[0])
