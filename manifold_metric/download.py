"""Fetching and verifying the raw datasets: CIFAR-10, CIFAR-100, WikiText-103.

`ensure(source, path)` makes sure the files the loaders read (`data.load`,
`text.read_split`) exist under a dataset's configured directory `path`. It
returns at once when they do; otherwise it unpacks an archive the user put in
place by hand, or downloads the official archive with pooch (which checks its
md5 before the file gets its real name) and unpacks it with pooch's
processors. A failed or interrupted download never leaves a file that passes
for a complete one, and never removes a directory it did not create.
Failures raise a `DownloadError` (a `files.InputError`) that names the
address, the expected md5 and where to put the file by hand.
"""

import contextlib
import dataclasses
import gzip
import os
import shutil
import stat
import sys
import tarfile
import tempfile
import time
import urllib.parse
import zipfile
import zlib

import pooch

from manifold_metric.files import InputError

# Seconds without any data from the server (before it answers, or between two
# reads) before giving up: long enough for a slow mirror, short enough that a
# dead or stalled server does not hang a job forever. Read at call time, so
# tests can lower it.
DEFAULT_TIMEOUT = 60.0
_CHUNK = 1 << 16


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
        "CIFAR-10",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
        "cifar-10-python.tar.gz",
        "cifar-10-batches-py",
        {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
        ("batches.meta",),
    ),
    "cifar100": Archive(
        "CIFAR-100",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
        "cifar-100-python.tar.gz",
        "cifar-100-python",
        {"train": ("train",), "test": ("test",)},
        ("meta",),
    ),
    # The md5 torchtext publishes for this archive.
    "wikitext": Archive(
        "WikiText-103",
        "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-103-v1.zip",
        "9ddaacaf6af0710eda8c456decff7832",
        "wikitext-103-v1.zip",
        "wikitext-103",
        {s: (f"wiki.{s}.tokens",) for s in ("train", "valid", "test")},
        accepts_parent=False,
    ),
}


class DownloadError(InputError):
  """A dataset could not be fetched or unpacked."""


class NetworkError(DownloadError):
  """The server could not be reached (no network, refused, no answer) or refused the file."""


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
    raise ValueError(
        f"no archive known for source {source!r}; expected one of " f"{', '.join(ARCHIVES)}"
    )
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
    raise ValueError(
        f"unknown {a.title} splits {sorted(unknown)}; expected some of " f"{', '.join(a.splits)}"
    )
  directory = layout(source, path).directory
  return [
      os.path.join(directory, f)
      for s, names in a.splits.items()
      if splits is None or s in splits
      for f in names
  ]


def _mb(n):
  return f"{n / 1e6:.1f} MB"


class _Progress:
  """Progress lines on `out` every `every` seconds (not per chunk: logs stay
  readable), as the progress bar object pooch's HTTPDownloader accepts:
  pooch sets `total` (0 when the server sends no length) once the server has
  answered, calls `update` per chunk and, on success, `reset`, `update` and
  `close` to fill the bar.
  """

  def __init__(self, name, every, out):
    self.name, self.every, self.out = name, every, out
    self.total = None  # still None: the server never answered
    self.done = 0
    self.start = self.last = time.monotonic()
    self._finishing = False

  def update(self, n):
    if self._finishing:  # pooch's final fill-up, not data
      return
    # pooch counts whole chunks; the last one may be short.
    self.done = min(self.done + n, self.total) if self.total else self.done + n
    now = time.monotonic()
    if now - self.last < self.every:
      return
    self.last = now
    rate = self.done / max(now - self.start, 1e-6)
    if self.total:
      left = (self.total - self.done) / rate if rate else float("inf")
      line = (
          f"{_mb(self.done)} / {_mb(self.total)} ({100 * self.done / self.total:.0f}%), "
          f"{_mb(rate)}/s, {left:.0f} s left"
      )
    else:
      line = f"{_mb(self.done)} of unknown size, {_mb(rate)}/s"
    print(f"{self.name}: {line}", file=self.out, flush=True)

  def reset(self):
    self._finishing = True

  def close(self):
    pass

  def finish(self, size):
    """The closing line, with the size actually received."""
    took = time.monotonic() - self.start
    print(
        f"{self.name}: {_mb(size)} in {took:.0f} s ({_mb(size / max(took, 1e-6))}/s)",
        file=self.out,
        flush=True,
    )


@contextlib.contextmanager
def _quiet_pooch():
  """Silences pooch's own log lines, which duplicate ours and ignore `out`."""
  logger = pooch.get_logger()
  level = logger.level
  logger.setLevel("WARNING")
  try:
    yield
  finally:
    logger.setLevel(level)


def _causes(e):
  """`e` and what it wraps (requests and urllib3 nest the socket's error)."""
  seen = []
  while isinstance(e, BaseException) and e not in seen:
    seen.append(e)
    e = (
        e.__cause__
        or e.__context__
        or getattr(e, "reason", None)
        or (e.args[0] if e.args else None)
    )
  return seen


def _timed_out(e):
  return any(isinstance(c, TimeoutError) for c in _causes(e))


def _reason(e, timeout):
  """A short human reason for a failure to get an answer from the server."""
  causes = _causes(e)
  if any(isinstance(c, ConnectionRefusedError) for c in causes):
    return "connection refused"
  if _timed_out(e):
    return f"no answer within {timeout:g} s"
  os_errors = [c for c in causes if isinstance(c, OSError) and c.strerror]
  return os_errors[-1].strerror if os_errors else str(causes[-1]) or type(e).__name__


def download(
    url: str,
    dest,
    md5: str,
    *,
    timeout: float | None = None,
    by_hand: str | None = None,
    progress_every: float = 5.0,
    out=None,
) -> None:
  """Downloads `url` to `dest` with pooch, verified, with progress on `out`.

  pooch streams the file to a temporary name beside `dest` and renames it to
  `dest` only once its md5 matches; on any failure the temporary file is
  removed, so nothing under `dest` is ever partial. A body shorter than the
  server's Content-Length is an error (requests checks it); without a length
  the md5 tells.

  Args:
    url: the http or https address.
    dest: the path to write.
    md5: the expected md5, 32 hex digits.
    timeout: seconds without data from the server (before it answers, or
      between two reads) before giving up; default `DEFAULT_TIMEOUT`.
    by_hand: what error messages tell the user to do with a file fetched by
      hand; default "put it at <dest>".
    progress_every: seconds between progress lines.
    out: the stream for progress lines; default sys.stderr.

  Returns:
    None. Raises `NetworkError` (no answer, including a server that accepts
    the connection and sends nothing), `IncompleteDownloadError` or
    `ChecksumError`.
  """
  import requests  # only for its exceptions; pooch imports it on use, too

  dest, md5 = os.fspath(dest), md5.lower()
  timeout = DEFAULT_TIMEOUT if timeout is None else timeout
  out = out or sys.stderr
  by_hand = by_hand or f"put it at {dest}"

  def error(cls, why):
    return cls(
        f"cannot download {url} ({why}); download it by hand, check its md5 is "
        f"{md5}, and {by_hand}"
    )

  if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
    raise error(NetworkError, "not an http or https address")
  progress = _Progress(os.path.basename(dest), progress_every, out)
  http = pooch.HTTPDownloader(
      progressbar=progress,
      chunk_size=_CHUNK,
      timeout=timeout,
      headers={"User-Agent": "manifold-metric"},
  )

  def fetch(url, output_file, instance):
    # pooch's downloader, with its failures told in our words; pooch removes
    # `output_file` (its temporary) when this raises.
    try:
      http(url, output_file, instance)
    except requests.exceptions.HTTPError as e:
      raise error(
          NetworkError, f"the server answered HTTP {e.response.status_code} " f"{e.response.reason}"
      ) from e
    except requests.exceptions.RequestException as e:
      if progress.total is None:  # no answer at all: the same as without network
        raise error(NetworkError, _reason(e, timeout)) from e
      got = os.path.getsize(output_file)
      why = f"no data for {timeout:g} s" if _timed_out(e) else type(_causes(e)[-1]).__name__
      raise error(
          IncompleteDownloadError,
          f"the connection dropped after {got} of "
          f"{progress.total or 'an unknown number of'} bytes: {why}",
      ) from e
    # pooch checks the md5 too, before renaming; here to name the md5 found.
    actual = pooch.file_hash(output_file, alg="md5")
    if actual != md5:
      raise error(
          ChecksumError,
          f"the file has md5 {actual}, expected {md5}: corrupt in "
          "transit or not the expected archive",
      )
    progress.finish(os.path.getsize(output_file))

  print(f"downloading {url} to {dest}", file=out, flush=True)
  with _quiet_pooch():
    pooch.retrieve(
        url,
        f"md5:{md5}",
        fname=os.path.basename(dest),
        path=os.path.dirname(os.path.abspath(dest)),
        downloader=fetch,
    )


def _check_name(name, archive):
  """Refuses a member name that is absolute or climbs out of the target."""
  parts = name.replace("\\", "/").split("/")
  if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts:
    raise ArchiveError(
        f"archive {archive} holds the unsafe path {name!r} (absolute or "
        "with '..'); refusing to unpack it"
    )


def _check_tar(archive):
  # pooch passes tarfile's "data" filter only from Python 3.12 on: check here.
  # The datasets' archives hold plain files and directories, nothing else.
  with tarfile.open(archive, "r:*") as t:
    for m in t.getmembers():
      _check_name(m.name, archive)
      if not (m.isfile() or m.isdir()) or m.mode & (stat.S_ISUID | stat.S_ISGID):
        raise ArchiveError(
            f"archive {archive} holds {m.name!r}, which is a link, a device "
            "or a setuid file; refusing to unpack it"
        )


def _check_zip(archive):
  with zipfile.ZipFile(archive) as z:
    for info in z.infolist():
      _check_name(info.filename, archive)
      if stat.S_ISLNK(info.external_attr >> 16):
        # zipfile would write the link's target as a file's content; refuse instead.
        raise ArchiveError(
            f"archive {archive} holds a symbolic link {info.filename!r}; " "refusing to unpack it"
        )


def _place(src, dest):
  """Renames the unpacked directory to `dest`, or adds its missing files to an existing one."""
  try:
    os.replace(src, dest)  # atomic; also replaces an empty directory
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

  Absolute paths, '..', links, devices and setuid files are refused before
  anything is written. pooch's `Untar`/`Unzip` then extract `top` into a
  temporary directory beside `dest`; only when `top/<expected>` are all
  present is `top` renamed to `dest` (if `dest` already holds files, only the
  files it lacks are moved there).

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
  tmp = os.path.abspath(
      tempfile.mkdtemp(prefix=f".{os.path.basename(dest)}.", suffix=".unpack", dir=parent)
  )
  try:
    try:
      zipped = zipfile.is_zipfile(archive)
      (_check_zip if zipped else _check_tar)(archive)
      extract = (pooch.Unzip if zipped else pooch.Untar)(members=[top], extract_dir=tmp)
      with _quiet_pooch():
        extract(os.path.abspath(archive), "download", None)  # "download": always extract
    except ArchiveError as e:
      raise ArchiveError(f"{e}{hint}") from None
    except (tarfile.TarError, zipfile.BadZipFile, gzip.BadGzipFile, EOFError, zlib.error) as e:
      raise ArchiveError(
          f"archive {archive} is not a readable tar.gz or zip file "
          f"({type(e).__name__}: {e}){hint}"
      ) from e
    missing = [f for f in expected if not os.path.isfile(os.path.join(tmp, top, f))]
    if missing:
      raise ArchiveError(
          f"archive {archive} does not hold {top}/ with " f"{', '.join(missing)}{hint}"
      )
    _place(os.path.join(tmp, top), dest)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return dest


def _absent_dirs(*paths):
  """The directories among `paths` and their ancestors that do not exist, deepest first."""
  absent = set()
  for p in paths:
    p = os.path.abspath(p)
    while not os.path.lexists(p):
      absent.add(p)
      p = os.path.dirname(p)
  return sorted(absent, key=len, reverse=True)  # a child's path is longer than its parent's


def ensure(
    source: str,
    path,
    url: str | None = None,
    md5: str | None = None,
    *,
    splits=None,
    timeout: float | None = None,
    out=None,
) -> list[str]:
  """Makes sure a dataset's files exist, downloading it if needed.

  Data the user already has is never fetched again: when the files exist this
  returns at once, without touching the network or the files. Otherwise an
  archive already at `layout(...).archive` (put there by hand, or kept by an
  earlier unpack that failed) is checked and unpacked, and kept; else the
  archive is downloaded from `url`, verified, unpacked, and deleted. On
  failure the directories this call created are removed if empty; a
  directory that existed before stays, empty or not.

  Args:
    source: "cifar10", "cifar100" or "wikitext".
    path: the dataset's configured directory (see `layout`).
    url: a mirror of the official archive; default the official address.
    md5: the md5 of the archive at `url`; default the published one.
    splits: the splits needed (see `files`); None for all.
    timeout: seconds without data from the server before giving up; default
      `DEFAULT_TIMEOUT`.
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
  by_hand = (
      f"put it at {where.archive} (or unpack it so that {where.directory}/ holds "
      f"{', '.join(a.members)})"
  )
  created = _absent_dirs(where.directory, os.path.dirname(where.archive) or ".")
  try:
    downloaded = False
    if os.path.exists(where.archive):
      print(f"checking {where.archive}, found in place", file=out, flush=True)
      actual = pooch.file_hash(where.archive, alg="md5")
      if actual != md5:
        raise ChecksumError(
            f"{where.archive} has md5 {actual}, expected {md5} (the archive "
            f"at {url}); delete it to download it again, or download it by "
            f"hand, check its md5 is {md5}, and {by_hand}"
        )
    else:
      download(url, where.archive, md5, timeout=timeout, by_hand=by_hand, out=out)
      downloaded = True
    unpack(
        where.archive,
        where.directory,
        a.top,
        a.members,
        by_hand=f"download it by hand from {url}, check its md5 is {md5}, and {by_hand}",
    )
  except BaseException:
    for d in created:  # only what this call created, and only if empty
      with contextlib.suppress(OSError):
        os.rmdir(d)
    raise
  # The archive goes once unpacked: the loaders and this function read only the
  # unpacked files, and it would double the disk used (~170 MB for CIFAR). One
  # the user put in place by hand is theirs and stays.
  if downloaded:
    os.remove(where.archive)
  print(f"{a.title} is in {where.directory}", file=out, flush=True)
  return wanted
