"""Mean, standard deviation and 95% interval over seeds of every correlation."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

import pandas as pd

from manifold_metric import correlation, io

summary = correlation.summarize(pd.concat([io.read_table(f) for f in snakemake.input],
                                          ignore_index=True))
print(summary.query("epoch == 0 and method == 'kendall'").to_string(), file=sys.stderr)
io.write_table(summary, snakemake.output[0])
