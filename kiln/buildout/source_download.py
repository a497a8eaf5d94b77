"""Source downloads through ShaCache, keyed as SlapOS keys them: ``file-urlmd5:<md5(url)>``.

The cache is tried first (entries must be signed by a trusted key, and the blob must match
the profile's md5sum), then the network.  A file fetched from the network is uploaded when an
upload key is configured.  So a site whose network source is gone (upstream down, offline
site) builds from the cache, and ``kiln software seed-sources`` fills that cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zc.buildout
import zc.buildout.download

from kiln.buildout import debian_sources, npm_registry
from kiln.shacache.client import CacheClient, CacheError

log = logging.getLogger("kiln.source-cache")

# The signature of zc.buildout.download.Download.download(self, url, md5sum, path).
DownloadFunction = Callable[[Any, str, "str | None", "str | None"], tuple[str, bool]]


def source_key(url: str) -> str:
    """The ShaDir key of a source URL, as slapos.libnetworkcache computes it."""
    return "file-urlmd5:" + hashlib.md5(url.encode()).hexdigest()


def md5_matches(path: Path, md5sum: str | None) -> bool:
    if not md5sum:
        return True
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "md5").hexdigest() == md5sum


def _temporary_path() -> Path:
    """A fresh path in the temp directory (as buildout's own downloads use)."""
    fd, name = tempfile.mkstemp(prefix="kiln-source-")
    os.close(fd)
    return Path(name)


def _place(tmp: Path, path: str | None) -> tuple[str, bool]:
    """Move a finished download where buildout wants it (as Download.download does)."""
    if path:
        shutil.move(str(tmp), path)
        return path, False
    return str(tmp), True


class SourceCache:
    """Wraps buildout's Download.download with the cache-first lookup described above."""

    def __init__(self, client: CacheClient | None, events: list[str] | None = None) -> None:
        self.client = client
        self.events: list[str] = events if events is not None else []

    def _note(self, message: str, *args: object) -> None:
        text = message % args
        self.events.append(text)
        log.info(text)

    def from_cache(self, url: str, md5sum: str | None) -> Path | None:
        if self.client is None or not self.client.can_download:
            return None
        key = source_key(url)
        try:
            entries = self.client.select(key, {"url": url})
        except CacheError as error:
            self._note("source cache unreachable for %s: %s", url, error)
            return None
        for entry in entries:
            tmp = _temporary_path()
            try:
                self.client.download(entry["sha512"], tmp)
            except CacheError as error:
                self._note("source cache entry for %s refused: %s", url, error)
                continue
            if not md5_matches(tmp, md5sum):
                tmp.unlink()
                self._note("source cache entry for %s does not match md5sum %s", url, md5sum)
                continue
            self._note("source %s: from cache (%s)", url, key)
            return tmp
        return None

    def from_network(self, original: DownloadFunction, download: Any, url: str, md5sum: str | None):
        if debian_sources.is_debian_source(url):
            fetch = debian_sources.fetch
        elif npm_registry.is_npm_package(url):
            fetch = npm_registry.fetch
        else:
            return original(download, url, md5sum, None)
        with tempfile.TemporaryDirectory(prefix="kiln-registry-source-") as workdir:
            fetched = fetch(url, Path(workdir))
            if not md5_matches(fetched, md5sum):
                raise zc.buildout.download.ChecksumError(f"MD5 checksum mismatch for {url}")
            name = str(_temporary_path())
            shutil.move(str(fetched), name)
            return name, True

    def upload(self, url: str, path: Path, md5sum: str | None) -> None:
        if self.client is None or not self.client.can_upload:
            return
        metadata = {"url": url, "filename": Path(url).name}
        if md5sum:
            metadata["md5sum"] = md5sum
        try:
            sha512 = self.client.upload(path, source_key(url), metadata)
        except CacheError as error:
            self._note("source %s: upload to cache failed: %s", url, error)
            return
        self._note("source %s: uploaded to cache (sha512 %s…)", url, sha512[:16])

    def wrap(self, original: DownloadFunction) -> DownloadFunction:
        cache = self

        def download(self: Any, url: str, md5sum: str | None = None, path: str | None = None):
            if url.startswith("file:") or url.startswith("/"):
                return original(self, url, md5sum, path)
            cached = cache.from_cache(url, md5sum)
            if cached is not None:
                return _place(cached, path)
            try:
                name, _is_temp = cache.from_network(original, self, url, md5sum)
            except Exception as error:
                raise zc.buildout.UserError(
                    f"cannot download {url}: not in the cache (key {source_key(url)}) and "
                    f"the network source failed: {error}\n"
                    "Seed the cache on an offline site with `kiln software seed-sources` "
                    "(see software/README.md)."
                ) from error
            cache._note("source %s: downloaded from the network", url)
            cache.upload(url, Path(name), md5sum)
            return _place(Path(name), path)

        download.__wrapped__ = original  # type: ignore[attr-defined]
        return download
