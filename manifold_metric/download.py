"""Fetching and verifying the raw datasets: CIFAR-10, CIFAR-100, WikiText-103.

`ensure(source, path)` makes sure the files the loaders read (`data.load`,
`text.read_split`) exist under a dataset's configured directory `path`. It
returns at once when they do; otherwise it unpacks an archive the user put in
place by hand, or downloads the official archive, checks its length and md5
and unpacks it. Every step writes under a temporary name beside its
destination and renames into place only what is complete and verified, so a
failed or interrupted download never leaves a file that passes for a complete
one. Failures raise a `DownloadError` (a `files.InputError`) that names the
address, the expected md5 and where to put the file by hand.
"""

import dataclasses
import gzip
import hashlib
import http.client
import os
import posixpath
import shutil
import stat
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib

from manifold_metric.files import InputError, atomic_path

# Seconds without any data from the server before giving up: long enough for a
# slow mirror, short enough that a dead server does not hang a job forever.
DEFAULT_TIMEOUT = 60.0
_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class Archive:
  """An official dataset archive and the layout it unpacks to.

  Attributes:
    title: the dataset's name, for messages.
    url: the official address.
    md5: the published md5 of the archive.
    filename: the archive's file name.
    top: the single top directory the archive unpacks to.
    splits: split -> files under `top` that the loader reads for it.
    extra: further files under `top` the archive must hold (metadata).
    accepts_parent: whether the loader also finds the files when given the
      parent of the top directory (CIFAR's does, WikiText's does not).
  """
  title: str
  url: str
  md5: str
  filename: str
  top: str
  splits: dict
  extra: tuple = ()
  accepts_parent: bool = True

  @property
  def members(self) -> list[str]:
    """Every file under `top` that a complete unpacked archive holds."""
    return [f for files in self.splits.values() for f in files] + list(self.extra)


ARCHIVES = {
    # md5s as published on https://www.cs.toronto.edu/~kriz/cifar.html.
    "cifar10": Archive(
        "CIFAR-10", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a", "cifar-10-python.tar.gz", "cifar-10-batches-py",
        {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
        ("batches.meta",)),
    "cifar100": Archive(
        "CIFAR-100", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python.tar.gz", "cifar-100-python",
        {"train": ("train",), "test": ("test",)}, ("meta",)),
    # The md5 torchtext publishes for this archive.
    "wikitext": Archive(
        "WikiText-103",
        "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-103-v1.zip",
        "9ddaacaf6af0710eda8c456decff7832", "wikitext-103-v1.zip", "wikitext-103",
        {s: (f"wiki.{s}.tokens",) for s in ("train", "valid", "test")},
        accepts_parent=False),
}


class DownloadError(InputError):
  """A dataset could not be fetched or unpacked."""


class NetworkError(DownloadError):
  """The server could not be reached (no network, refused, timed out) or refused the file."""


class ChecksumError(DownloadError):
  """The archive's md5 is not the expected one."""


class IncompleteDownloadError(DownloadError):
  """The connection dropped or stalled before the whole file arrived."""


class ArchiveError(DownloadError):
  """The archive is unreadable, unsafe, or lacks the expected files."""


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where a dataset's files live on disk.

  Attributes:
    directory: the directory holding the files the loaders read; the
      archive's top directory is unpacked to this path.
    archive: the path of the archive, beside `directory`.
  """
  directory: str
  archive: str


def _archive(source: str) -> Archive:
  if source not in ARCHIVES:
    raise ValueError(f"no archive known for source {source!r}; expected one of "
                     f"{', '.join(ARCHIVES)}")
  return ARCHIVES[source]


def layout(source: str, path) -> Layout:
  """The on-disk layout of a dataset under its configured directory.

  The loaders accept the archive's top directory itself (the configs'
  `data/cifar-10-batches-py`, `data/wikitext-103`) or, for CIFAR only, its
  parent (`data`); so does this.

  Args:
    source: one of `ARCHIVES`.
    path: the dataset's configured directory.

  Returns:
    A `Layout`. If `path`'s last component is the archive's top directory,
    the files are in `path` and the archive goes beside it. For CIFAR any
    other `path` is the parent: the files are in `path/<top>` and the archive
    in `path`. WikiText's loader reads `path/wiki.*.tokens` whatever its
    name, so there the files are always in `path`.
  """
  a = _archive(source)
  path = os.path.normpath(os.fspath(path))
  if os.path.basename(path) == a.top or not a.accepts_parent:
    return Layout(path, os.path.join(os.path.dirname(path), a.filename))
  return Layout(os.path.join(path, a.top), os.path.join(path, a.filename))


def files(source: str, path, splits=None) -> list[str]:
  """The files the loaders read for a dataset.

  Args:
    source: one of `ARCHIVES`.
    path: the dataset's configured directory (see `layout`).
    splits: the splits read (cifar: "train", "test"; wikitext: "train",
      "valid", "test"); None for all of them.

  Returns:
    The paths, in the order of the archive's splits.
  """
  a = _archive(source)
  unknown = set(splits or ()) - set(a.splits)
  if unknown:
    raise ValueError(f"unknown {a.title} splits {sorted(unknown)}; expected some of "
                     f"{', '.join(a.splits)}")
  directory = layout(source, path).directory
  return [os.path.join(directory, f) for s, names in a.splits.items()
          if splits is None or s in splits for f in names]


def md5sum(path) -> str:
  """The md5 of a file as 32 hex digits, read in chunks.

  Args:
    path: the file.

  Returns:
    The hex digest.
  """
  digest = hashlib.md5(usedforsecurity=False)
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      digest.update(chunk)
  return digest.hexdigest()


def _mb(n):
  return f"{n / 1e6:.1f} MB"


class _Progress:
  """A progress line on `out` every `every` seconds, not per chunk: logs stay readable."""

  def __init__(self, name, total, every, out):
    self.name, self.total, self.every, self.out = name, total, every, out
    self.start = self.last = time.monotonic()

  def update(self, done, final=False):
    now = time.monotonic()
    if not final and now - self.last < self.every:
      return
    self.last = now
    rate = done / max(now - self.start, 1e-6)
    if final:
      line = f"{_mb(done)} in {now - self.start:.0f} s ({_mb(rate)}/s)"
    elif self.total:
      left = (self.total - done) / rate if rate else float("inf")
      line = (f"{_mb(done)} / {_mb(self.total)} ({100 * done / self.total:.0f}%), "
              f"{_mb(rate)}/s, {left:.0f} s left")
    else:
      line = f"{_mb(done)} of unknown size, {_mb(rate)}/s"
    print(f"{self.name}: {line}", file=self.out, flush=True)


def _reason(e, timeout):
  """A short human reason for a failure to connect."""
  r = e.reason if isinstance(e, urllib.error.URLError) else e
  if isinstance(r, ConnectionRefusedError):
    return "connection refused"
  if isinstance(r, TimeoutError):
    return f"no answer within {timeout:g} s"
  if isinstance(r, OSError) and r.strerror:
    return r.strerror
  return str(r) or type(r).__name__


def download(url: str, dest, md5: str, *, timeout: float = DEFAULT_TIMEOUT,
             by_hand: str | None = None, progress_every: float = 5.0, out=None) -> None:
  """Downloads `url` to `dest`, verified, with progress on stderr.

  The file is streamed to a temporary name beside `dest`; its length is
  checked against Content-Length (when the server sends one), then its md5,
  and only then is it renamed to `dest`. On any failure the temporary file
  is removed, so nothing under `dest` is ever partial.

  Args:
    url: the address (http, https, file).
    dest: the path to write.
    md5: the expected md5, 32 hex digits.
    timeout: seconds without data from the server before giving up.
    by_hand: what error messages tell the user to do with a file fetched by
      hand; default "put it at <dest>".
    progress_every: seconds between progress lines.
    out: the stream for progress lines; default sys.stderr.

  Returns:
    None. Raises `NetworkError`, `IncompleteDownloadError` or `ChecksumError`.
  """
  dest, md5 = os.fspath(dest), md5.lower()
  out = out or sys.stderr
  by_hand = by_hand or f"put it at {dest}"

  def error(cls, why):
    return cls(f"cannot download {url} ({why}); download it by hand, check its md5 is "
               f"{md5}, and {by_hand}")

  request = urllib.request.Request(url, headers={"User-Agent": "manifold-metric"})
  with atomic_path(dest) as tmp, open(tmp, "wb") as f:
    try:
      response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
      raise error(NetworkError, f"the server answered HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
      # URLError wraps refused, unreachable and unresolvable hosts; a server that
      # accepts but never answers raises TimeoutError from getresponse directly.
      raise error(NetworkError, _reason(e, timeout)) from e
    with response:
      length = response.headers.get("Content-Length")
      total = int(length) if length and length.isdigit() else None
      print(f"downloading {url} to {dest}" + (f" ({_mb(total)})" if total else ""),
            file=out, flush=True)
      progress = _Progress(os.path.basename(dest), total, progress_every, out)
      digest, done = hashlib.md5(usedforsecurity=False), 0
      while True:
        try:
          chunk = response.read(_CHUNK)
        except (http.client.HTTPException, OSError) as e:  # IncompleteRead, reset, timeout
          why = (f"no data for {timeout:g} s" if isinstance(e, TimeoutError)
                 else f"{type(e).__name__}: {e}")
          raise error(IncompleteDownloadError, f"the connection dropped after {done} "
                      f"of {total or 'an unknown number of'} bytes: {why}") from e
        if not chunk:
          break
        f.write(chunk)  # outside the try: a full disk is an OSError, not a dropped connection
        digest.update(chunk)
        done += len(chunk)
        progress.update(done)
    # http.client returns b"" when the server closes early; only the length tells.
    if total is not None and done != total:
      raise error(IncompleteDownloadError, f"the connection dropped after {done} of "
                  f"{total} bytes")
    if digest.hexdigest() != md5:
      raise error(ChecksumError, f"the file has md5 {digest.hexdigest()}, expected {md5}: "
                  "corrupt in transit or not the expected archive")
    progress.update(done, final=True)


def _check_member(name, archive):
  """Refuses a member name that is absolute or climbs out of the target."""
  parts = name.replace("\\", "/").split("/")
  if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts:
    raise ArchiveError(f"archive {archive} holds the unsafe path {name!r} (absolute or "
                       "with '..'); refusing to unpack it")


def _check_link(name, target, archive, hard):
  # Hard-link targets are relative to the archive's root, symlinks to their directory.
  resolved = posixpath.normpath(target if hard else posixpath.join(posixpath.dirname(name), target))
  if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
    raise ArchiveError(f"archive {archive} holds a link {name!r} -> {target!r} pointing "
                       "outside it; refusing to unpack it")


def _extract_tar(archive, into):
  with tarfile.open(archive, "r:*") as t:
    for m in t.getmembers():
      _check_member(m.name, archive)
      if m.issym() or m.islnk():
        _check_link(m.name, m.linkname, archive, m.islnk())
    # The "data" filter also refuses devices, setuid bits and links out of `into`.
    t.extractall(into, filter="data")


def _extract_zip(archive, into):
  with zipfile.ZipFile(archive) as z:
    for info in z.infolist():
      _check_member(info.filename, archive)
      if stat.S_ISLNK(info.external_attr >> 16):
        # zipfile would write the link's target as a file's content; refuse instead.
        raise ArchiveError(f"archive {archive} holds a symbolic link {info.filename!r}; "
                           "refusing to unpack it")
    z.extractall(into)


def _place(src, dest):
  """Renames the unpacked directory to `dest`, or adds its missing files to an existing one."""
  try:
    os.replace(src, dest)  # atomic; also replaces an empty directory (Snakemake makes one)
    return
  except OSError:
    if not os.path.isdir(dest):
      raise
  # `dest` holds files already: add what is missing, never overwrite what the user has.
  for root, _, names in os.walk(src):
    target = os.path.join(dest, os.path.relpath(root, src))
    os.makedirs(target, exist_ok=True)
    for n in names:
      if not os.path.lexists(os.path.join(target, n)):
        os.replace(os.path.join(root, n), os.path.join(target, n))


def unpack(archive, dest, top: str, expected=(), *, by_hand: str = "") -> str:
  """Unpacks a tar.gz or zip archive safely; its top directory becomes `dest`.

  Members are extracted into a temporary directory beside `dest`; absolute
  paths, '..' and links pointing outside are refused. Only when
  `top/<expected>` are all present is `top` renamed to `dest` (if `dest`
  already holds files, only the files it lacks are moved there).

  Args:
    archive: the .tar.gz/.tgz/.tar or .zip file.
    dest: the directory to create, e.g. data/cifar-10-batches-py.
    top: the archive's top directory.
    expected: files under `top` the archive must hold.
    by_hand: appended to error messages (what the user can do instead).

  Returns:
    `dest`. Raises `ArchiveError` if the archive is unreadable, unsafe or
    lacks expected files; nothing is left under `dest` then.
  """
  archive, dest = os.fspath(archive), os.path.normpath(os.fspath(dest))
  hint = f"; {by_hand}" if by_hand else ""
  parent = os.path.dirname(dest) or "."
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(dest)}.", suffix=".unpack", dir=parent)
  try:
    try:
      if zipfile.is_zipfile(archive):
        _extract_zip(archive, tmp)
      else:
        _extract_tar(archive, tmp)
    except ArchiveError as e:
      raise ArchiveError(f"{e}{hint}") from None
    except tarfile.FilterError as e:
      raise ArchiveError(f"archive {archive} holds an unsafe member ({e}); refusing to "
                         f"unpack it{hint}") from e
    except (tarfile.TarError, zipfile.BadZipFile, gzip.BadGzipFile, EOFError, zlib.error) as e:
      raise ArchiveError(f"archive {archive} is not a readable tar.gz or zip file "
                         f"({type(e).__name__}: {e}){hint}") from e
    missing = [f for f in expected if not os.path.isfile(os.path.join(tmp, top, f))]
    if missing:
      raise ArchiveError(f"archive {archive} does not hold {top}/ with "
                         f"{', '.join(missing)}{hint}")
    _place(os.path.join(tmp, top), dest)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return dest


def ensure(source: str, path, url: str | None = None, md5: str | None = None, *,
           splits=None, timeout: float = DEFAULT_TIMEOUT, out=None) -> list[str]:
  """Makes sure a dataset's files exist, downloading it if needed.

  Data the user already has is never fetched again: when the files exist this
  returns at once, without touching the network. Otherwise an archive already
  at `layout(...).archive` (put there by hand, or kept by an earlier unpack
  that failed) is checked and unpacked; else the archive is downloaded from
  `url`, verified, unpacked, and deleted.

  Args:
    source: "cifar10", "cifar100" or "wikitext".
    path: the dataset's configured directory (see `layout`).
    url: a mirror of the official archive; default the official address.
    md5: the md5 of the archive at `url`; default the published one.
    splits: the splits needed (see `files`); None for all.
    timeout: seconds without data from the server before giving up.
    out: the stream for progress lines; default sys.stderr.

  Returns:
    The files the loaders read (`files(source, path, splits)`).
  """
  a = _archive(source)
  wanted = files(source, path, splits)
  if all(os.path.isfile(f) for f in wanted):
    return wanted
  out = out or sys.stderr
  url, md5 = url or a.url, (md5 or a.md5).lower()
  where = layout(source, path)
  by_hand = (f"put it at {where.archive} (or unpack it so that {where.directory}/ holds "
             f"{', '.join(a.members)})")
  downloaded = False
  if os.path.exists(where.archive):
    print(f"checking {where.archive}, found in place", file=out, flush=True)
    actual = md5sum(where.archive)
    if actual != md5:
      raise ChecksumError(f"{where.archive} has md5 {actual}, expected {md5} (the archive "
                          f"at {url}); delete it to download it again, or download it by "
                          f"hand, check its md5 is {md5}, and {by_hand}")
  else:
    download(url, where.archive, md5, timeout=timeout, by_hand=by_hand, out=out)
    downloaded = True
  unpack(where.archive, where.directory, a.top, a.members,
         by_hand=f"download it by hand from {url}, check its md5 is {md5}, and {by_hand}")
  # The archive goes once unpacked: the loaders and this function read only the
  # unpacked files, and it would double the disk used (~170 MB for CIFAR). One
  # the user put in place by hand is theirs and stays.
  if downloaded:
    os.remove(where.archive)
  print(f"{a.title} is in {where.directory}", file=out, flush=True)
  return wanted
