"""Downloads, verifies and unpacks a raw dataset whose files are missing."""
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from manifold_metric import download

p = snakemake.params
download.ensure(p.source, p.path, p.url, p.md5, splits=p.splits)
