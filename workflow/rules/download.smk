# Raw datasets (CIFAR-10/100, WikiText-103) fetched and verified when their files are missing.
import re
from types import SimpleNamespace

import manifold_metric.download


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


def raw_files(name):
    """The files dataset `name` is read from, if it is one that can be fetched
    (the copies shipped with the package never are)."""
    spec = config["datasets"][name]
    if spec["source"] not in manifold_metric.download.ARCHIVES or spec.get("path") == study.BUNDLED:
        return []
    return manifold_metric.download.files(spec["source"], dataset_dir(name), raw_splits(spec))


def get_raw_files(wildcards):
    """Input of the rules that read a dataset's raw files. Fetched or system
    files (Debian's Fashion-MNIST) are ancient, so a touched data file does not
    rebuild everything downstream; the copies shipped with the package are
    plain inputs, so that updating them rebuilds what was made from them.
    A missing file of a dataset that cannot be fetched is left to the loader,
    whose error says where to get it."""
    spec = config["datasets"][wildcards.dataset]
    if raw_files(wildcards.dataset):
        return ancient(raw_files(wildcards.dataset))
    directory = dataset_dir(wildcards.dataset)
    if directory is None or not os.path.isdir(directory):
        return []
    found = sorted(os.path.join(directory, f) for f in os.listdir(directory)
                   if not f.startswith(".") and f != "README.md")
    return found if spec.get("path") == study.BUNDLED else ancient(found)


# One download rule per data directory (datasets may share one), defined only
# while some of its files are missing, with only those as outputs. Snakemake
# reruns a script rule whose outputs are older than its script (unpacked
# archives keep their 2009 dates) and deletes a job's outputs before running
# it: a rule over files the user has would delete them and fetch them again.
DOWNLOADS = {}
for _name, _spec in config["datasets"].items():
    _missing = [f for f in raw_files(_name) if not os.path.exists(f)]
    if not _missing:
        continue
    _layout = manifold_metric.download.layout(_spec["source"], dataset_dir(_name))
    _key = (_spec["source"], _layout.directory)
    _d = DOWNLOADS.setdefault(_key, {"dataset": _name, "path": dataset_dir(_name),
                                     "url": _spec.get("url"), "md5": _spec.get("md5"),
                                     "splits": set(), "missing": []})
    _all = manifold_metric.download.ARCHIVES[_spec["source"]].splits
    _d["splits"].update(raw_splits(_spec) or _all)
    _d["missing"] += [f for f in _missing if f not in _d["missing"]]

for (_source, _), _d in DOWNLOADS.items():

    rule:
        name:
            "download_" + re.sub(r"\W", "_", _d["dataset"])
        output:
            _d["missing"],
        params:
            source=_source,
            path=_d["path"],
            splits=sorted(_d["splits"]),
            url=_d["url"],
            md5=_d["md5"],
        log:
            f"logs/data/{_d['dataset']}.download.log",
        # On a cluster, on the submitting host: compute nodes often have no internet.
        localrule: True
        script:
            "../scripts/download.py"
