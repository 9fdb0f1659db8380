# Raw datasets (CIFAR-10/100, WikiText-103) fetched and verified when their files are missing.
#
# One download rule per data directory (datasets may share one), always
# defined, whatever is on disk: its output is a small manifest under results/,
# never the data files. Snakemake deletes a job's outputs before running it,
# and after a failed run removes the empty directories of missing outputs and
# inputs: with the data files as outputs or inputs it could delete files the
# user has, or the configured (empty) dataset directory. The job runs
# `download.ensure`, which returns at once when the files are there, so a
# rerun (a new results/, a changed url) fetches nothing.
import re
from types import SimpleNamespace

import manifold_metric.download

DOWNLOAD_MANIFEST = "results/downloads/{name}.json"


def dataset_dir(name):
    """A dataset's configured directory, resolved as every other rule does."""
    return get_dataset_spec(SimpleNamespace(dataset=name))["path"]


def raw_splits(spec):
    """The splits the workflow reads: a text dataset's train and val splits;
    CIFAR's training batches only (validation is carved from them, the test
    split is never read)."""
    if spec["source"] == "wikitext":
        return sorted({spec[k] for k in ("train_split", "val_split") if k in spec}) or None
    return ["train"]


def fetchable(name):
    """Whether dataset `name` is one that can be fetched (the copies shipped
    with the package never are)."""
    spec = config["datasets"][name]
    fetched = spec["source"] in manifold_metric.download.ARCHIVES
    return fetched and spec.get("path") != study.BUNDLED


DOWNLOADS = {}  # (source, directory) -> the download rule's settings
DOWNLOAD_OF = {}  # dataset -> its download's name (the first dataset in its directory)
for _name, _spec in config["datasets"].items():
    if not fetchable(_name):
        continue
    _layout = manifold_metric.download.layout(_spec["source"], dataset_dir(_name))
    _d = DOWNLOADS.setdefault(
        (_spec["source"], _layout.directory),
        {
            "name": _name,
            "path": dataset_dir(_name),
            "url": _spec.get("url"),
            "md5": _spec.get("md5"),
            "splits": set(),
        },
    )
    _all = manifold_metric.download.ARCHIVES[_spec["source"]].splits
    _d["splits"].update(raw_splits(_spec) or _all)
    _d["rule"] = re.sub(r"\W", "_", _d["name"])  # a rule's name is an identifier
    DOWNLOAD_OF[_name] = _d["name"]


def get_raw_files(wildcards):
    """Input of the rules that read a dataset's raw files. A fetchable
    dataset's is its download manifest, ancient: a rewritten manifest (the
    download job rerun over the same files) rebuilds nothing; a changed
    dataset reruns its readers through their `spec` params. Other system files
    (Debian's Fashion-MNIST) are ancient too, so a touched data file does not
    rebuild everything downstream; the copies shipped with the package are
    plain inputs, so that updating them rebuilds what was made from them. A
    missing file of a dataset that cannot be fetched is left to the loader,
    whose error says where to get it."""
    spec = config["datasets"][wildcards.dataset]
    if wildcards.dataset in DOWNLOAD_OF:
        return ancient(DOWNLOAD_MANIFEST.format(name=DOWNLOAD_OF[wildcards.dataset]))
    directory = dataset_dir(wildcards.dataset)
    if directory is None or not os.path.isdir(directory):
        return []
    found = sorted(
        os.path.join(directory, f)
        for f in os.listdir(directory)
        if not f.startswith(".") and f != "README.md"
    )
    return found if spec.get("path") == study.BUNDLED else ancient(found)


for (_source, _), _d in DOWNLOADS.items():

    rule:
        name:
            f"download_{_d['rule']}"
        output:
            DOWNLOAD_MANIFEST.format(name=_d["name"]),
        log:
            f"logs/data/{_d['name']}.download.log",
        # On a cluster, on the submitting host: compute nodes often have no internet.
        localrule: True
        params:
            source=_source,
            path=_d["path"],
            splits=sorted(_d["splits"]),
            url=_d["url"],
            md5=_d["md5"],
        script:
            "../scripts/download.py"
