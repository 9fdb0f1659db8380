"""How one setting's ranking before training fared once the candidates were
trained: every score's Kendall tau with G_T* at t = 0, and its paired
difference to size's and width's."""

import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from manifold_metric import correlation, files, ranking, tables

summary = correlation.summarize(tables.read_table(snakemake.input[0]))
text = ranking.outcome_markdown(summary, snakemake.wildcards.setting)
print(text, file=sys.stderr)
with files.atomic_path(snakemake.output[0]) as tmp, open(tmp, "w") as f:
  f.write(text)
