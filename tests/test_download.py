"""Dataset download: a real HTTP server on loopback serves small archives of
the real layouts; good path, corrupt archive, dropped and stalled connections,
a server that accepts and never answers, no server, directories kept or
removed on failure, data already present, unsafe archives, and the workflow's
rule (its DAG the same whatever is on disk)."""

import functools
import hashlib
import http.server
import io as stdio
import json
import os
import pickle
import re
import socket
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from manifold_metric import data, download, text
from manifold_metric.files import InputError
from tests.workflow import make_project, planned_jobs, snakemake

WIKI = {
    "train": " = Valkyria Chronicles = \n the game began development in 2010 .\n",
    "valid": " = Homarus = \n the lobster lives in the sea .\n\n it is blue .\n",
    "test": " = Robert Boulter = \n he is an english actor .\n",
}


def md5(path):
  return hashlib.md5(Path(path).read_bytes()).hexdigest()


def cifar_batch(n, label_key, num_classes, seed):
  """A batch with the structure of CIFAR's python pickles."""
  rng = np.random.default_rng(seed)
  return {
      b"batch_label": f"batch {seed}".encode(),
      label_key: [int(i) % num_classes for i in range(n)],
      b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
      b"filenames": [f"img_{seed}_{i}.png".encode() for i in range(n)],
  }


def write_pickles(directory, batches):
  directory.mkdir(parents=True)
  for name, batch in batches.items():
    with open(directory / name, "wb") as f:
      pickle.dump(batch, f, protocol=2)


def make_tar(path, src, arcname):
  with tarfile.open(path, "w:gz") as t:
    t.add(src, arcname=arcname)
  return path


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
  """The served directory: small archives of the real layouts, plus bad ones."""
  root = tmp_path_factory.mktemp("served")
  src = tmp_path_factory.mktemp("src")
  batches = {f"data_batch_{i}": cifar_batch(20, b"labels", 10, i) for i in range(1, 6)}
  batches["test_batch"] = cifar_batch(20, b"labels", 10, 6)
  batches["batches.meta"] = {b"label_names": [f"c{i}".encode() for i in range(10)]}
  write_pickles(src / "cifar-10-batches-py", batches)
  make_tar(root / "cifar-10-python.tar.gz", src / "cifar-10-batches-py", "cifar-10-batches-py")
  write_pickles(
      src / "cifar-100-python",
      {
          "train": cifar_batch(300, b"fine_labels", 100, 1) | {b"coarse_labels": [0] * 300},
          "test": cifar_batch(100, b"fine_labels", 100, 2) | {b"coarse_labels": [0] * 100},
          "meta": {b"fine_label_names": [b"x"] * 100},
      },
  )
  make_tar(root / "cifar-100-python.tar.gz", src / "cifar-100-python", "cifar-100-python")
  with zipfile.ZipFile(root / "wikitext-103-v1.zip", "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("wikitext-103/", "")
    for split, content in WIKI.items():
      z.writestr(f"wikitext-103/wiki.{split}.tokens", content)
  # One flipped byte in the middle: same length, different md5.
  raw = bytearray((root / "cifar-10-python.tar.gz").read_bytes())
  raw[len(raw) // 2] ^= 0xFF
  (root / "corrupt.tar.gz").write_bytes(bytes(raw))
  return root


class Handler(http.server.SimpleHTTPRequestHandler):
  """Serves the archives; /drop/<f> and /nolength/<f> send half of the file
  and close, /stall/<f> sends half and then nothing."""

  def log_message(self, *args):
    pass

  def do_GET(self):
    self.server.requests.append(self.path)
    kind, _, name = self.path.lstrip("/").partition("/")
    if kind not in ("drop", "nolength", "stall"):
      return super().do_GET()
    body = (Path(self.directory) / name).read_bytes()
    self.send_response(200)
    if kind != "nolength":
      self.send_header("Content-Length", str(len(body)))
    self.end_headers()
    self.wfile.write(body[: len(body) // 2])
    self.wfile.flush()
    if kind == "stall":
      time.sleep(2)
    self.close_connection = True


@pytest.fixture(scope="module")
def server(archives):
  httpd = http.server.ThreadingHTTPServer(
      ("127.0.0.1", 0), functools.partial(Handler, directory=str(archives))
  )
  httpd.daemon_threads = True
  httpd.requests = []
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
  yield httpd
  httpd.shutdown()
  httpd.server_close()


@pytest.fixture
def requests(server):
  """The paths the server is asked for during one test."""
  server.requests.clear()
  return server.requests


@pytest.fixture
def silent_server():
  """The address of a server that accepts connections and never sends a byte."""
  listener = socket.socket()
  listener.bind(("127.0.0.1", 0))
  listener.listen()
  listener.settimeout(0.05)  # to notice `stop`
  held, stop = [], threading.Event()

  def serve():
    while not stop.is_set():
      try:
        held.append(listener.accept()[0])
      except TimeoutError:
        pass

  thread = threading.Thread(target=serve, daemon=True)
  thread.start()
  yield f"http://127.0.0.1:{listener.getsockname()[1]}"
  stop.set()
  thread.join()
  for c in held + [listener]:
    c.close()


def closed_port_url(name):
  s = socket.socket()
  s.bind(("127.0.0.1", 0))
  port = s.getsockname()[1]
  s.close()
  return f"http://127.0.0.1:{port}/{name}"


def files_under(path):
  return sorted(str(p.relative_to(path)) for p in Path(path).rglob("*") if not p.is_dir())


# Layout -------------------------------------------------------------------------------


def test_layout_follows_the_loaders():
  assert download.files("cifar10", "data/cifar-10-batches-py", ["train"]) == [
      f"data/cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)
  ]
  assert download.files("cifar100", "data") == [
      "data/cifar-100-python/train",
      "data/cifar-100-python/test",
  ]
  assert download.layout("cifar10", "data/cifar-10-batches-py/") == download.Layout(
      "data/cifar-10-batches-py", "data/cifar-10-python.tar.gz"
  )
  assert download.layout("cifar100", "data").archive == "data/cifar-100-python.tar.gz"
  # text.read_split reads path/wiki.*.tokens whatever path is called.
  assert download.files("wikitext", "data/wt103", ["valid"]) == ["data/wt103/wiki.valid.tokens"]
  assert download.layout("wikitext", "data/wikitext-103").archive == "data/wikitext-103-v1.zip"
  with pytest.raises(ValueError, match="splits"):
    download.files("wikitext", "data", ["dev"])
  with pytest.raises(ValueError, match="no archive"):
    download.files("digits", "data")
  assert download.ARCHIVES["cifar10"].md5 == "c58f30108f718f92721af3b95e74349a"
  assert issubclass(download.DownloadError, InputError)


# The good path ------------------------------------------------------------------------


def test_cifar10_is_fetched_verified_and_read(tmp_path, server, archives, requests):
  path = tmp_path / "data" / "cifar-10-batches-py"
  log = stdio.StringIO()
  got = download.ensure(
      "cifar10",
      path,
      f"{server.url}/cifar-10-python.tar.gz",
      md5(archives / "cifar-10-python.tar.gz"),
      out=log,
  )
  assert got == [str(path / f"data_batch_{i}") for i in range(1, 6)] + [str(path / "test_batch")]
  assert requests == ["/cifar-10-python.tar.gz"]
  # The downloaded archive is deleted once unpacked; no temporary is left.
  assert files_under(tmp_path) == sorted(
      f"data/cifar-10-batches-py/{f}" for f in download.ARCHIVES["cifar10"].members
  )
  assert "downloading" in log.getvalue() and "MB" in log.getvalue()
  ds = data.load("cifar10", path, test=True)
  assert ds["x_train"].shape == (80, 32, 32, 3) and len(ds["x_val"]) == 20
  assert len(ds["x_test"]) == 20 and ds["num_classes"] == 10


def test_cifar100_into_the_parent_directory(tmp_path, server, archives, requests):
  download.ensure(
      "cifar100",
      tmp_path / "data",
      f"{server.url}/cifar-100-python.tar.gz",
      md5(archives / "cifar-100-python.tar.gz"),
  )
  ds = data.load("cifar100", tmp_path / "data")  # the parent, as the loader allows
  assert ds["num_classes"] == 100 and len(ds["x_train"]) + len(ds["x_val"]) == 300
  assert files_under(tmp_path) == [
      "data/cifar-100-python/meta",
      "data/cifar-100-python/test",
      "data/cifar-100-python/train",
  ]


@pytest.mark.parametrize("name", ["wikitext-103", "wt103"])
def test_wikitext_is_fetched_and_read(tmp_path, server, archives, requests, name):
  path = tmp_path / "data" / name
  download.ensure(
      "wikitext", path, f"{server.url}/wikitext-103-v1.zip", md5(archives / "wikitext-103-v1.zip")
  )
  assert text.read_split(path, "valid")[:4] == ["=", "Homarus", "=", "<eos>"]
  assert files_under(tmp_path) == [
      f"data/{name}/wiki.{s}.tokens" for s in ("test", "train", "valid")
  ]


def test_progress_lines_report_rate_and_time_left(tmp_path, server, archives):
  log = stdio.StringIO()
  download.download(
      f"{server.url}/cifar-100-python.tar.gz",
      tmp_path / "a.tar.gz",
      md5(archives / "cifar-100-python.tar.gz"),
      progress_every=0,
      out=log,
  )
  lines = log.getvalue().splitlines()
  assert any("MB/s" in line and "s left" in line and "%" in line for line in lines), lines
  assert md5(tmp_path / "a.tar.gz") == md5(archives / "cifar-100-python.tar.gz")


# Failures: nothing half-written under the real names ------------------------------------


def test_corrupt_archive_fails_its_checksum(tmp_path, server, archives, requests):
  good = md5(archives / "cifar-10-python.tar.gz")
  url = f"{server.url}/corrupt.tar.gz"
  with pytest.raises(download.ChecksumError) as e:
    download.ensure("cifar10", tmp_path / "data", url, good)
  msg = str(e.value)
  assert url in msg and good in msg and md5(archives / "corrupt.tar.gz") in msg
  assert f"put it at {tmp_path}/data/cifar-10-python.tar.gz" in msg
  assert f"{tmp_path}/data/cifar-10-batches-py/ holds data_batch_1" in msg
  assert files_under(tmp_path) == []


@pytest.mark.parametrize("kind", ["drop", "nolength"])
def test_dropped_connection_leaves_nothing(tmp_path, server, archives, requests, kind):
  url = f"{server.url}/{kind}/cifar-10-python.tar.gz"
  want = md5(archives / "cifar-10-python.tar.gz")
  # With a Content-Length the short count tells; without, the md5 does.
  error = download.IncompleteDownloadError if kind == "drop" else download.ChecksumError
  with pytest.raises(error) as e:
    download.ensure("cifar10", tmp_path / "data", url, want)
  assert url in str(e.value) and want in str(e.value)
  if kind == "drop":
    assert "dropped after" in str(e.value)
  assert files_under(tmp_path) == []
  assert requests == [f"/{kind}/cifar-10-python.tar.gz"]


def test_stalled_server_times_out(tmp_path, server, archives):
  url = f"{server.url}/stall/wikitext-103-v1.zip"
  start = time.monotonic()
  with pytest.raises(download.IncompleteDownloadError, match="no data for 0.3 s"):
    download.ensure(
        "wikitext",
        tmp_path / "wikitext-103",
        url,
        md5(archives / "wikitext-103-v1.zip"),
        timeout=0.3,
    )
  assert time.monotonic() - start < 1.5
  assert files_under(tmp_path) == []


def test_server_that_never_answers_fails_in_time_as_without_network(
    tmp_path, silent_server, monkeypatch
):
  assert download.DEFAULT_TIMEOUT == 60
  monkeypatch.setattr(download, "DEFAULT_TIMEOUT", 0.5)  # what ensure uses by default
  path = tmp_path / "data" / "cifar-10-batches-py"
  url = f"{silent_server}/cifar-10-python.tar.gz"
  start = time.monotonic()
  with pytest.raises(download.NetworkError) as stalled:
    download.ensure("cifar10", path, url)
  took = time.monotonic() - start
  assert 0.5 <= took < 2.0, took
  refused_url = closed_port_url("cifar-10-python.tar.gz")
  with pytest.raises(download.NetworkError) as refused:
    download.ensure("cifar10", path, refused_url)
  # The message without network, but for the address and the reason.
  assert str(stalled.value) == str(refused.value).replace(refused_url, url).replace(
      "(connection refused)", "(no answer within 0.5 s)"
  )
  assert files_under(tmp_path) == []


def test_no_network_names_the_address_and_where_to_put_the_file(tmp_path):
  url = closed_port_url("cifar-10-python.tar.gz")
  with pytest.raises(download.NetworkError) as e:
    download.ensure("cifar10", tmp_path / "data" / "cifar-10-batches-py", url)
  msg = str(e.value)
  assert msg.startswith(f"cannot download {url} (connection refused)")
  assert "c58f30108f718f92721af3b95e74349a" in msg  # the published md5 by default
  assert f"{tmp_path}/data/cifar-10-python.tar.gz" in msg
  assert files_under(tmp_path) == []


def test_missing_file_on_the_server(tmp_path, server):
  with pytest.raises(download.NetworkError, match="HTTP 404"):
    download.ensure("cifar100", tmp_path, f"{server.url}/nothing.tar.gz")
  assert files_under(tmp_path) == []


# Directories: only those a failed download created go ---------------------------------


@pytest.mark.parametrize("mine", [[], ["notes.txt"]], ids=["empty", "with-files"])
@pytest.mark.parametrize("fail", ["refused", "checksum"])
def test_failed_download_keeps_a_directory_that_existed(tmp_path, server, archives, mine, fail):
  path = tmp_path / "data" / "cifar-10-batches-py"
  path.mkdir(parents=True)
  for f in mine:
    (path / f).write_text("mine\n")
  url = (
      closed_port_url("cifar-10-python.tar.gz")
      if fail == "refused"
      else f"{server.url}/corrupt.tar.gz"
  )
  with pytest.raises(download.DownloadError):
    download.ensure("cifar10", path, url, md5(archives / "cifar-10-python.tar.gz"))
  assert path.is_dir() and files_under(tmp_path) == [f"data/cifar-10-batches-py/{f}" for f in mine]
  # CIFAR's parent layout: the archive goes into the configured directory itself.
  with pytest.raises(download.DownloadError):
    download.ensure("cifar10", tmp_path / "data", url, md5(archives / "cifar-10-python.tar.gz"))
  assert path.is_dir() and files_under(tmp_path) == [f"data/cifar-10-batches-py/{f}" for f in mine]


@pytest.mark.parametrize("fail", ["refused", "checksum", "dropped"])
def test_failed_download_removes_only_the_directories_it_created(tmp_path, server, archives, fail):
  url = {
      "refused": closed_port_url("cifar-100-python.tar.gz"),
      "checksum": f"{server.url}/corrupt.tar.gz",
      "dropped": f"{server.url}/drop/cifar-100-python.tar.gz",
  }[fail]
  (tmp_path / "mine").mkdir()
  with pytest.raises(download.DownloadError):
    download.ensure(
        "cifar100",
        tmp_path / "mine" / "new" / "data",
        url,
        md5(archives / "cifar-100-python.tar.gz"),
    )
  assert sorted(os.listdir(tmp_path)) == ["mine"] and os.listdir(tmp_path / "mine") == []


# Data the user has -----------------------------------------------------------------------


def test_data_present_is_not_downloaded_again(tmp_path, server, archives, requests):
  with tarfile.open(archives / "cifar-10-python.tar.gz") as t:
    t.extractall(tmp_path, filter="data")
  before = {p: p.stat().st_mtime_ns for p in (tmp_path / "cifar-10-batches-py").iterdir()}
  got = download.ensure("cifar10", tmp_path, f"{server.url}/cifar-10-python.tar.gz")
  assert requests == []
  assert {p: p.stat().st_mtime_ns for p in (tmp_path / "cifar-10-batches-py").iterdir()} == before
  assert all(os.path.isfile(f) for f in got)


def test_archive_put_in_place_by_hand_is_used_and_kept(tmp_path, archives):
  archive = tmp_path / "cifar-100-python.tar.gz"
  archive.write_bytes((archives / "cifar-100-python.tar.gz").read_bytes())
  download.ensure("cifar100", tmp_path, closed_port_url("x"), md5(archive))
  assert archive.exists() and (tmp_path / "cifar-100-python" / "train").exists()


def test_archive_put_in_place_with_a_wrong_md5_is_refused(tmp_path, archives):
  archive = tmp_path / "cifar-10-python.tar.gz"
  archive.write_bytes((archives / "corrupt.tar.gz").read_bytes())
  with pytest.raises(download.ChecksumError, match="delete it to download it again"):
    download.ensure("cifar10", tmp_path)
  assert files_under(tmp_path) == ["cifar-10-python.tar.gz"]  # the user's file stays


def test_missing_split_is_added_without_touching_the_others(tmp_path, server, archives):
  path = tmp_path / "wikitext-103"
  path.mkdir()
  (path / "wiki.valid.tokens").write_text("mine\n")
  download.ensure(
      "wikitext", path, f"{server.url}/wikitext-103-v1.zip", md5(archives / "wikitext-103-v1.zip")
  )
  assert (path / "wiki.valid.tokens").read_text() == "mine\n"
  assert (path / "wiki.train.tokens").read_text() == WIKI["train"]
  assert files_under(tmp_path) == [
      f"wikitext-103/wiki.{s}.tokens" for s in ("test", "train", "valid")
  ]


# Unsafe or wrong archives ------------------------------------------------------------------


def _tar_with(path, member, data=b"x", link=None):
  with tarfile.open(path, "w:gz") as t:
    info = tarfile.TarInfo(member)
    if link:
      info.type, info.linkname = tarfile.SYMTYPE, link
      t.addfile(info)
    else:
      info.size = len(data)
      t.addfile(info, stdio.BytesIO(data))


@pytest.mark.parametrize(
    "member,link",
    [
        ("../evil", None),
        ("/tmp/evil", None),
        ("cifar-100-python/a/../../../evil", None),
        ("cifar-100-python/train", "/etc/passwd"),
        ("cifar-100-python/train", "../../evil"),
    ],
)
def test_unsafe_tar_is_refused(tmp_path, member, link):
  archive = tmp_path / "in" / "x.tar.gz"
  archive.parent.mkdir()
  _tar_with(archive, member, link=link)
  with pytest.raises(download.ArchiveError, match="refusing"):
    download.unpack(archive, tmp_path / "out" / "cifar-100-python", "cifar-100-python", ["train"])
  assert files_under(tmp_path) == ["in/x.tar.gz"]


def test_unsafe_zip_is_refused(tmp_path):
  archive = tmp_path / "in" / "x.zip"
  archive.parent.mkdir()
  with zipfile.ZipFile(archive, "w") as z:
    z.writestr("wikitext-103/../../evil", "x")
  with pytest.raises(download.ArchiveError, match="unsafe path"):
    download.unpack(archive, tmp_path / "out" / "wikitext-103", "wikitext-103")
  assert files_under(tmp_path) == ["in/x.zip"]


def test_archive_without_the_expected_files_is_refused(tmp_path, archives):
  with pytest.raises(download.ArchiveError, match="does not hold cifar-10-batches-py/ with"):
    download.unpack(
        archives / "cifar-100-python.tar.gz",
        tmp_path / "cifar-10-batches-py",
        "cifar-10-batches-py",
        download.ARCHIVES["cifar10"].members,
    )
  # A truncated archive (a flipped byte can pass tar unnoticed: only the md5 tells).
  raw = (archives / "cifar-10-python.tar.gz").read_bytes()
  (tmp_path / "in").mkdir()
  (tmp_path / "in" / "half.tar.gz").write_bytes(raw[: len(raw) // 2])
  with pytest.raises(download.ArchiveError, match="not a readable"):
    download.unpack(
        tmp_path / "in" / "half.tar.gz", tmp_path / "cifar-10-batches-py", "cifar-10-batches-py"
    )
  assert files_under(tmp_path) == ["in/half.tar.gz"]


# The workflow ------------------------------------------------------------------------------

CONFIG = """
seeds: [0]
datasets:
  cifar10: {{source: cifar10, path: data/cifar-10-batches-py, url: "{url}", md5: "{md5}"}}
train: {{optimizer: adamw, lr: 1.0e-3, weight_decay: 1.0e-4, b1: 0.9, b2: 0.999, batch_size: 16}}
base: {{max_epochs: 1, patience: 1}}
candidate: {{epochs: 1}}
metric: {{batch_size: 16, n_max: 4, n: [4], q: [0.4], main_q: 0.4, main_n: 4}}
settings:
  cifar10-mlp:
    dataset: cifar10
    model: {{kind: mlp, hidden: [8]}}
    expansions:
      x2: {{kind: widen_first, factor: 2}}
      x3: {{kind: widen_first, factor: 3}}
figures: {{}}
"""
TARGET = "results/data/cifar10.npz"
MANIFEST = "results/downloads/cifar10.json"


def mtimes(path):
  return {str(p): p.stat().st_mtime_ns for p in Path(path).rglob("*")}


def dag(project, *targets):
  """The jobs and their dependencies (`snakemake --dag`), whether or not they need to run."""
  out = snakemake(project, "--dag", *targets).stdout
  graph = out[out.index("digraph") :]
  return re.sub(r',\s*style="[^"]*"', "", graph)  # done jobs are only drawn dashed


def test_workflow_downloads_missing_data_once(tmp_path, server, archives, requests):
  p = make_project(
      tmp_path,
      CONFIG.format(
          url=f"{server.url}/cifar-10-python.tar.gz", md5=md5(archives / "cifar-10-python.tar.gz")
      ),
  )
  assert planned_jobs(p, TARGET) == {"download_cifar10": 1, "prepare_dataset": 1}
  assert requests == []  # a dry run fetches nothing
  snakemake(p, TARGET)
  assert requests == ["/cifar-10-python.tar.gz"]
  assert data.load_npz(p / TARGET)["x_train"].shape == (80, 32, 32, 3)
  assert "downloading" in (p / "logs/data/cifar10.download.log").read_text()
  assert files_under(p / "data") == sorted(
      f"cifar-10-batches-py/{f}" for f in download.ARCHIVES["cifar10"].members
  )
  manifest = json.loads((p / MANIFEST).read_text())
  assert manifest["files"] == {
      f"data/cifar-10-batches-py/data_batch_{i}": os.path.getsize(
          p / f"data/cifar-10-batches-py/data_batch_{i}"
      )
      for i in range(1, 6)
  }
  assert planned_jobs(p, TARGET) == {}
  # Data older than the download script (real archives date from 2009) is
  # neither fetched again nor deleted, and its dates do not rebuild the
  # dataset. A download script newer than the manifest reruns the download
  # job (Snakemake reruns a script's job whose outputs are older than the
  # script): it only finds the files in place.
  for f in (p / "data" / "cifar-10-batches-py").iterdir():
    os.utime(f, (1.25e9, 1.25e9))
  before = mtimes(p / "data") | mtimes(p / "results/data")
  os.utime(p / "workflow/scripts/download.py")
  assert planned_jobs(p, TARGET) == {"download_cifar10": 1}
  snakemake(p, TARGET)
  assert mtimes(p / "data") | mtimes(p / "results/data") == before
  assert json.loads((p / MANIFEST).read_text()) == manifest
  assert planned_jobs(p, TARGET) == {}
  (p / TARGET).unlink()
  assert planned_jobs(p, TARGET) == {"prepare_dataset": 1}
  assert requests == ["/cifar-10-python.tar.gz"]


@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing-empty-directory"])
def test_workflow_without_network_fails_with_the_message(tmp_path, existing):
  url = closed_port_url("cifar-10-python.tar.gz")
  p = make_project(tmp_path, CONFIG.format(url=url, md5="0" * 32))
  if existing:
    (p / "data" / "cifar-10-batches-py").mkdir(parents=True)
  proc = snakemake(p, TARGET, check=False)
  assert proc.returncode != 0
  log = (p / "logs/data/cifar10.download.log").read_text()
  assert f"NetworkError: cannot download {url} (connection refused)" in log
  assert "put it at data/cifar-10-python.tar.gz" in log
  if existing:  # the user's directory stays, empty as it was
    assert os.listdir(p / "data") == ["cifar-10-batches-py"]
    assert os.listdir(p / "data" / "cifar-10-batches-py") == []
  else:  # what the download created goes with it
    assert not (p / "data").exists()
  assert not (p / MANIFEST).exists()


def test_workflow_dag_is_the_same_whatever_is_on_disk(tmp_path):
  # No server: the data present must never be fetched again.
  config = CONFIG.format(url=closed_port_url("cifar-10-python.tar.gz"), md5="0" * 32)
  (tmp_path / "absent").mkdir()
  (tmp_path / "present").mkdir()
  absent = make_project(tmp_path / "absent", config)
  present = make_project(tmp_path / "present", config)
  batches = {f"data_batch_{i}": cifar_batch(20, b"labels", 10, i) for i in range(1, 6)}
  write_pickles(present / "data" / "cifar-10-batches-py", batches)  # a tiny fake CIFAR-10
  before = mtimes(present / "data")
  jobs = planned_jobs(absent)
  assert jobs["download_cifar10"] == 1 and jobs["prepare_dataset"] == 1 and len(jobs) > 5
  graph = dag(absent)
  assert '"download_cifar10"' in graph
  # Data put in place by hand: the same DAG and the same jobs, the download
  # job only checking the files and writing the manifest the data rules read.
  assert planned_jobs(present) == jobs
  snakemake(present, MANIFEST)
  assert mtimes(present / "data") == before
  assert (present / "logs/data/cifar10.download.log").read_text() == (
      f"5 files in place in data/cifar-10-batches-py, listed in {MANIFEST}\n"
  )
  # From then on no download job, and still the same DAG.
  assert planned_jobs(present) == {k: n for k, n in jobs.items() if k != "download_cifar10"}
  assert dag(present) == graph
  assert mtimes(present / "data") == before
