"""Downloads and archive extraction: a file appears at its final path only once it is verified.

`fetch` tries mirror after mirror, retries transient failures, resumes partial downloads with HTTP
Range requests and checks an md5 or a sha256 prefix (torchvision's rule) before renaming the file
into place. `extract_tar` unpacks into a temporary directory beside the destination and merges into
it only once the whole archive has been read, writing a per-archive marker last. Standard library
only (urllib), so the download rules run wherever Python does.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import logging
import lzma
import os
import re
import shutil
import ssl
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from layersweep.errors import LayersweepError
from layersweep.faults import pause_point

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # 1 MiB: large enough for fast disks, small enough for a smooth progress bar
USER_AGENT = "layersweep/0.1 (+python-urllib)"


# ----------------------------------------------------------------------------------------- hashes
def _digest(path: str | os.PathLike, algorithm: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, algorithm).hexdigest()  # reads in chunks, never whole file


def md5sum(path: str | os.PathLike) -> str:
    """Hex md5 of a file, read in chunks (the VOC archives are ~450 MB)."""
    return _digest(path, "md5")


def sha256sum(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks."""
    return _digest(path, "sha256")


def _mismatch(path: Path, md5: str | None, sha256_prefix: str | None) -> str | None:
    """None if `path` passes every given check, else a few words saying which check failed."""
    if md5 is not None and md5sum(path) != md5.lower():
        return "md5 mismatch"
    if sha256_prefix is not None and not sha256sum(path).startswith(sha256_prefix.lower()):
        return "sha256 mismatch"
    return None


def check_weights_file(path: str | os.PathLike, sha256_prefix: str, *,
                       config_key: str = "model.weights") -> Path:
    """Check a weights file the way torchvision does: its sha256 starts with `sha256_prefix`.

    Returns the path; raises LayersweepError naming the file if it is missing or does not match.
    """
    path = Path(path)
    if not re.fullmatch(r"[0-9a-fA-F]{1,64}", sha256_prefix or ""):
        raise LayersweepError(f"sha256 prefix {sha256_prefix!r} for weights file {path} is not hex")
    if not path.is_file():
        raise LayersweepError(
            f"weights file {path} does not exist; set config key '{config_key}' to a local copy")
    digest = sha256sum(path)
    if not digest.startswith(sha256_prefix.lower()):
        raise LayersweepError(
            f"weights file {path} has sha256 {digest[:len(sha256_prefix)]}... but "
            f"{sha256_prefix.lower()}... was expected (corrupt or wrong file)")
    return path


# ----------------------------------------------------------------------------------------- fetch
class _Transient(Exception):
    """A failure worth retrying on the same mirror (connection lost, 5xx, truncated body)."""


class _Permanent(Exception):
    """A failure that retrying the same mirror cannot fix (404, bad URL): go to the next mirror."""


# Errors from the network side of a transfer; plain OSErrors (disk full) are not among them.
_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError,
                   TimeoutError, ssl.SSLError)


def _describe(exc: BaseException) -> tuple[str, bool]:
    """A few words for the error message, and whether the error looks like 'no network'."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}", False
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused", True
    if isinstance(reason, TimeoutError):
        return "timed out", True
    if isinstance(reason, OSError) and reason.__class__.__name__ == "gaierror":
        return "host not found", True
    if isinstance(reason, (ConnectionResetError, http.client.IncompleteRead,
                           http.client.RemoteDisconnected)):
        return f"connection lost ({reason})" if str(reason) else "connection lost", False
    if isinstance(reason, (OSError, http.client.HTTPException)):
        return f"connection error ({reason.__class__.__name__})", True
    return str(reason), False


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) from a Content-Range header such as 'bytes 100-199/200' or 'bytes */200'."""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(2)) if m.group(2) != "*" else None
    return start, total


def _download_once(url: str, part: Path, *, timeout: float, progress: bool, desc: str) -> bool:
    """One HTTP transfer into `part`, resuming it if it holds bytes. Returns True if it appended.

    Raises _Transient or _Permanent; a broken transfer keeps its bytes in `part` so that the next
    attempt resumes instead of starting over.
    """
    offset = part.stat().st_size if part.exists() else 0
    for _ in range(2):  # the second pass only follows a resume the server could not honour
        headers = {"User-Agent": USER_AGENT}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
        except urllib.error.HTTPError as exc:
            with contextlib.closing(exc):
                if exc.code == 416 and offset:
                    # Range not satisfiable: either the .part is already whole or it is longer
                    # than the file (stale); in the second case start over.
                    _, total = _content_range(exc.headers.get("Content-Range"))
                    if total == offset:
                        return True
                    part.unlink(missing_ok=True)
                    offset = 0
                    continue
                if exc.code >= 500 or exc.code in (408, 429):
                    raise _Transient(exc) from exc
                raise _Permanent(exc) from exc
        except ValueError as exc:  # urllib's answer to a malformed URL
            raise _Permanent(exc) from exc
        except _NETWORK_ERRORS as exc:
            raise _Transient(exc) from exc

        with resp:
            if offset and resp.status == 206:
                start, _ = _content_range(resp.headers.get("Content-Range"))
                if start != offset:  # a range we did not ask for: appending would corrupt
                    part.unlink(missing_ok=True)
                    offset = 0
                    continue
                mode = "ab"
            else:
                offset, mode = 0, "wb"  # 200: the server ignored Range and sends the whole file
            length = resp.headers.get("Content-Length")
            length = int(length) if length and length.isdigit() else None
            received = 0
            try:
                with open(part, mode) as fh, tqdm(
                        total=None if length is None else offset + length, initial=offset,
                        unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                        disable=not progress) as bar:
                    while chunk := resp.read(CHUNK):
                        fh.write(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
                        if length and received - len(chunk) < length / 2 <= received:  # the kill test's midpoint
                            fh.flush()
                            pause_point(part.with_suffix(""))
            except _NETWORK_ERRORS as exc:
                raise _Transient(exc) from exc
            except OSError as exc:  # the local side: disk full, permission denied
                raise LayersweepError(f"could not write {part}: {exc.strerror or exc}") from exc
            # http.client returns b'' rather than raising when the peer closes early: check here.
            if length is not None and received < length:
                raise _Transient(ConnectionResetError(
                    f"closed after {offset + received} of {offset + length} bytes"))
            return mode == "ab"
    raise _Transient(ConnectionError("server did not honour the resume"))


def _try_mirror(url: str, part: Path, *, md5: str | None, sha256_prefix: str | None, retries: int,
                timeout: float, backoff: float, progress: bool, desc: str) -> tuple[str, bool] | None:
    """Download and verify `url` into `part`. None on success, else (short reason, looks offline)."""
    fresh_retry_left = True
    while True:
        resumed = False
        failure: BaseException | None = None
        for attempt in range(max(1, retries)):
            if attempt:
                delay = backoff * 2 ** (attempt - 1)
                log.warning("retrying %s in %.1f s (attempt %d of %d): %s",
                            url, delay, attempt + 1, retries, _describe(failure)[0])
                time.sleep(delay)
            try:
                resumed |= _download_once(url, part, timeout=timeout, progress=progress, desc=desc)
                failure = None
                break
            except _Permanent as exc:
                return _describe(exc.__cause__ or exc.args[0])
            except _Transient as exc:
                failure = exc.__cause__ or exc.args[0]
        if failure is not None:
            return _describe(failure)

        reason = _mismatch(part, md5, sha256_prefix)
        if reason is None:
            return None
        # A corrupt download must never look complete: drop it before anything else.
        part.unlink(missing_ok=True)
        log.warning("%s from %s: %s", desc, url, reason)
        if resumed and fresh_retry_left:
            # The bytes kept from an earlier transfer may be the culprit: one clean retry.
            fresh_retry_left = False
            continue
        return reason, False


def fetch(mirrors: list[str], dest: str | os.PathLike, *, md5: str | None = None,
          sha256_prefix: str | None = None, retries: int = 3, timeout: float = 30,
          backoff: float = 1.0, config_key: str, hint: str = "the path of a local copy",
          progress: bool = True) -> Path:
    """Download `dest` from the first mirror that serves a file passing the checks.

    Each mirror gets up to `retries` attempts, with exponential backoff (`backoff`, 2*backoff, ...)
    after connection errors and 5xx answers; a 404 or a checksum mismatch moves on at once. Bytes
    go to `dest` + '.part', which later attempts resume with an HTTP Range request. Only a
    verified file is renamed onto `dest`, so `dest` is either absent or correct. If `dest` already
    exists and verifies, no request is made. When every mirror fails, LayersweepError says which
    file, why in short, and which config key (`config_key`, set to `hint`) points at a local copy.
    """
    dest = Path(dest)
    part = dest.with_suffix(dest.suffix + ".part")
    if dest.exists():
        if (reason := _mismatch(dest, md5, sha256_prefix)) is None:
            return dest
        # Only verified files are renamed onto dest, so this one came from elsewhere: replace it.
        log.warning("%s exists but fails its check (%s); downloading it again", dest, reason)
        dest.unlink()
    if not mirrors:
        raise LayersweepError(
            f"no mirror is configured for {dest.name}; set config key '{config_key}' to {hint}")
    dest.parent.mkdir(parents=True, exist_ok=True)

    failures: list[str] = []
    offline = True
    for url in mirrors:
        result = _try_mirror(url, part, md5=md5, sha256_prefix=sha256_prefix, retries=retries,
                             timeout=timeout, backoff=backoff, progress=progress, desc=dest.name)
        if result is None:
            os.replace(part, dest)  # atomic: dest appears complete or not at all
            return dest
        reason, looks_offline = result
        offline &= looks_offline
        host = urllib.parse.urlsplit(url).netloc or url
        failures.append(f"{host}: {reason}")
        log.warning("%s: %s failed (%s)", dest.name, url, reason)

    n = len(mirrors)
    why = "; ".join(failures) + ("; no network?" if offline else "")
    raise LayersweepError(
        f"could not download {dest.name} from any of {n} mirror{'s' if n > 1 else ''} ({why}); "
        f"download it elsewhere and set config key '{config_key}' to {hint}")


# ----------------------------------------------------------------------------------------- tar
def _safe_members(tf: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    """All members, after refusing absolute names and '..' (tarfile's data filter would only
    strip a leading '/', silently writing somewhere the archive's author did not say)."""
    members = tf.getmembers()
    # tarfile ends the member list quietly at a missing or garbled header past the first one, so
    # an archive cut at a header boundary would extract "fine" with files missing; a whole tar
    # ends with a block of zeros where the next header would be.
    tf.fileobj.seek(tf.offset)
    end = tf.fileobj.read(tarfile.BLOCKSIZE)
    if len(end) != tarfile.BLOCKSIZE or end.count(0) != tarfile.BLOCKSIZE:
        after = f" after member {members[-1].name!r}" if members else ""
        raise LayersweepError(f"archive {archive} is truncated or corrupt{after}")
    for m in members:
        p = PurePosixPath(m.name)
        if p.is_absolute() or ".." in p.parts or re.match(r"^[A-Za-z]:", m.name):
            raise LayersweepError(f"archive {archive} holds an unsafe member path {m.name!r}")
    return members


def _merge(src: Path, dest: Path) -> None:
    """Move every file under `src` into the same relative place under `dest` (same filesystem)."""
    for root, dirs, files in os.walk(src):
        target = dest / Path(root).relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            os.replace(Path(root) / name, target / name)
        for name in dirs:  # os.walk does not descend into symlinked dirs: move those links whole
            if (Path(root) / name).is_symlink():
                os.replace(Path(root) / name, target / name)


def extract_tar(archive: str | os.PathLike, dest_dir: str | os.PathLike, *, marker: str,
                progress: bool = True) -> Path:
    """Safely extract `archive` into `dest_dir`, merging with what is there; returns the marker path.

    The archive is first unpacked whole into a temporary directory beside `dest_dir` (same
    filesystem, so the final moves are renames); files are then moved into `dest_dir` and the
    marker file `dest_dir/marker` is written last. An interrupted or failed extraction therefore
    never leaves the marker, and a failure before the merge leaves `dest_dir` untouched. Several
    archives (VOC trainval and test both hold VOCdevkit/VOC2007/...) can share one `dest_dir`,
    each with its own marker. A present marker means done: nothing is read.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    marker_path = dest_dir / marker
    if marker_path.exists():
        return marker_path
    if not archive.is_file():
        raise LayersweepError(f"archive {archive} does not exist")
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{dest_dir.name}.{archive.name}.extracting-"
    for stale in dest_dir.parent.glob(prefix + "*"):  # left by a killed run; can be ~GBs
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=dest_dir.parent))
    try:
        try:
            with tarfile.open(archive) as tf:
                members = _safe_members(tf, archive)
                # The data filter refuses links leaving the tree, device files and odd permissions.
                tf.extractall(tmp, members=tqdm(members, desc=f"extract {archive.name}",
                                                unit="file", disable=not progress),
                              filter="data")
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError) as exc:
            raise LayersweepError(
                f"archive {archive} is corrupt or truncated ({exc.__class__.__name__}: {exc})") from exc
        if not members:
            raise LayersweepError(f"archive {archive} is empty")
        _merge(tmp, dest_dir)
        # Marker last, itself atomic: its presence means every file of this archive is in place.
        marker_tmp = marker_path.with_name(marker_path.name + ".part")
        marker_tmp.write_text(f"{archive.name}\n{len(members)} members\n")
        os.replace(marker_tmp, marker_path)
        return marker_path
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
