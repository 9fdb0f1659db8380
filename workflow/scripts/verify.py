"""Loads every checkpoint, table, dataset and vocabulary under results/ and
names each one that is truncated or unreadable (`snakemake verify`)."""

import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from manifold_metric import integrity

checked, bad = integrity.check("results")
for message in bad:
  print(message, file=sys.stderr)
print(f"{checked} files checked, {len(bad)} unreadable", file=sys.stderr)
if bad:
  sys.exit(
      f"{len(bad)} of {checked} files under results/ are truncated or unreadable:\n"
      + "\n".join(bad)
  )
