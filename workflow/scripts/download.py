"""Makes sure a raw dataset's files are in place (fetching, verifying and
unpacking the archive only if they are missing), then writes the manifest the
data rules depend on."""

import json
import os
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)

from manifold_metric import download
from manifold_metric.files import atomic_path

p = snakemake.params
got = download.ensure(p.source, p.path, p.url, p.md5, splits=p.splits)
# No dates or hashes: a rerun over the same files writes the same manifest.
manifest = {
    "source": p.source,
    "directory": download.layout(p.source, p.path).directory,
    "splits": p.splits,
    "files": {f: os.path.getsize(f) for f in got},
}
with atomic_path(snakemake.output[0]) as tmp, open(tmp, "w") as f:
  json.dump(manifest, f, indent=1)
  f.write("\n")
print(
    f"{len(got)} files in place in {manifest['directory']}, listed in {snakemake.output[0]}",
    file=sys.stderr,
)
