"""The cache client: upload, select trusted entries, download with verification.

This is the Python API the buildout extension calls (it builds its client with
``CacheClient.from_config`` from the ``[networkcache]`` section, see
:mod:`kiln.shacache.config`)::

    client = CacheClient.from_url("http://127.0.0.1:5080", trust=trust, signing_keys=[key])
    sha512 = client.upload(path, "kiln-part:...", {"part": "zstd"})
    [newest, *_] = client.select("kiln-part:...", {"part": "zstd"})
    client.download(newest["sha512"], destination)

Signatures are required by default: ``select`` never returns an entry that no trusted key
signed.  Every download is checked against its sha512 before it becomes visible.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import requests
from tqdm import tqdm

from kiln.common.addresses import redact
from kiln.shacache.config import CacheConfig, service_urls
from kiln.shacache.entries import InvalidEntry, check_dir_key, is_sha512, parse_metadata
from kiln.shacache.keys import SigningKey, TrustList, sign_metadata

log = logging.getLogger("shacache.client")

PIECE = 1 << 20
# Small enough that a broken stream loses little of what already arrived.
READ_PIECE = 64 << 10
PROGRESS_THRESHOLD = 8 << 20
# Answers that a later try may not get.  507 (disk full) is left out: it needs an operator.
RETRYABLE = frozenset({500, 502, 503, 504})


class CacheError(Exception):
    """A cache operation failed; the message says what and, where possible, what to do."""


@dataclass(frozen=True)
class EntryReport:
    """One ShaDir entry as seen by this client: usable or not, and why."""

    metadata: dict | None
    metadata_text: str
    signature: str
    trusted: bool
    reason: str


def sha512_of_file(path: Path, progress: bool = False) -> str:
    digest = hashlib.sha512()
    size = path.stat().st_size
    with (
        open(path, "rb") as f,
        _progress(size, f"hashing {path.name}", progress) as bar,
    ):
        while chunk := f.read(PIECE):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def _progress(total: int | None, description: str, enabled: bool | None) -> tqdm:
    if enabled is None:
        enabled = bool(total and total >= PROGRESS_THRESHOLD and sys.stderr.isatty())
    return tqdm(
        total=total,
        desc=description,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=not enabled,
        leave=False,
    )


class _ProgressReader:
    """A file wrapper that reports how much requests has sent."""

    def __init__(self, f: IO[bytes], bar: tqdm) -> None:
        self._f = f
        self._bar = bar

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size if size and size > 0 else PIECE)
        self._bar.update(len(data))
        return data

    def __len__(self) -> int:
        return os.fstat(self._f.fileno()).st_size


def partial_path(dest: Path, sha512: str) -> Path:
    """Where ``download(..., resume=True)`` keeps an interrupted download of ``sha512``."""
    return dest.parent / f".{dest.name}.{sha512[:32]}.partial"


def _blob_size(response: requests.Response) -> int | None:
    """The whole blob's size: Content-Range's total for a 206, Content-Length for a 200."""
    if response.status_code == 206:
        total = response.headers.get("Content-Range", "").rpartition("/")[2]
        return int(total) if total.isdigit() else None
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


class CacheClient:
    def __init__(
        self,
        *,
        download_cache_url: str | None,
        download_dir_url: str | None,
        upload_cache_url: str | None = None,
        upload_dir_url: str | None = None,
        trust: TrustList | None = None,
        signing_keys: Iterable[SigningKey] = (),
        require_signature: bool = True,
        client_cert: tuple[str, str] | None = None,
        ca_file: str | None = None,
        retries: int = 5,
        timeout: float = 60.0,
        progress: bool | None = None,
    ) -> None:
        self.download_cache_url = download_cache_url.rstrip("/") if download_cache_url else None
        self.download_dir_url = download_dir_url.rstrip("/") if download_dir_url else None
        self.upload_cache_url = upload_cache_url.rstrip("/") if upload_cache_url else None
        self.upload_dir_url = upload_dir_url.rstrip("/") if upload_dir_url else None
        self.trust = trust or TrustList()
        self.signing_keys = list(signing_keys)
        self.require_signature = require_signature
        self.retries = retries
        self.timeout = timeout
        self.progress = progress
        self.session = requests.Session()
        if client_cert:
            self.session.cert = client_cert
        # Passed on every request: requests lets $REQUESTS_CA_BUNDLE override session.verify.
        self._verify: str | bool = ca_file or True

    # --- Construction ------------------------------------------------------------------------

    @classmethod
    def from_url(cls, url: str, *, upload: bool = True, **kwargs: Any) -> CacheClient:
        """One base URL serving ``/shacache`` and ``/shadir``, as ``kiln cache serve`` does."""
        urls: dict[str, str | None] = {**service_urls(url)}
        if not upload:
            urls["upload_cache_url"] = urls["upload_dir_url"] = None
        return cls(**urls, **kwargs)

    @classmethod
    def from_config(cls, config: CacheConfig, **kwargs: Any) -> CacheClient:
        """The client a parsed ``[networkcache]`` configuration describes (see
        :mod:`kiln.shacache.config`); raises KeyError_ for an unreadable signing key."""
        cert, key = config.client_cert_file, config.client_key_file
        return cls(
            download_cache_url=config.download_cache_url,
            download_dir_url=config.download_dir_url,
            upload_cache_url=config.upload_cache_url,
            upload_dir_url=config.upload_dir_url,
            trust=config.trust(),
            signing_keys=config.signing_keys(),
            require_signature=config.require_signature,
            client_cert=(str(cert), str(key)) if cert and key else None,
            ca_file=str(config.ca_file) if config.ca_file else None,
            **kwargs,
        )

    @property
    def can_download(self) -> bool:
        return bool(self.download_cache_url and self.download_dir_url)

    @property
    def can_upload(self) -> bool:
        signed = bool(self.signing_keys) or not self.require_signature
        return bool(self.upload_cache_url and self.upload_dir_url and signed)

    # --- HTTP with retries -------------------------------------------------------------------

    def _request(
        self,
        method: str,
        url: str,
        *,
        rewind: Callable[[], None] | None = None,
        ok: Callable[[requests.Response], bool] = lambda r: r.status_code not in RETRYABLE,
        **kwargs: Any,
    ) -> requests.Response:
        """Send with retries and exponential backoff on connection errors and 5xx answers."""
        kwargs.setdefault("timeout", self.timeout)
        kwargs.setdefault("verify", self._verify)
        delay = 0.5
        for attempt in range(self.retries + 1):
            if rewind is not None:
                rewind()
            try:
                response = self.session.request(method, url, **kwargs)
            except requests.exceptions.SSLError as failure:
                # A certificate problem does not heal by retrying: say what it is.
                raise CacheError(f"TLS with {redact(url)} failed: {failure}") from None
            except requests.ConnectionError as failure:
                problem = f"cannot reach {redact(url)}: {failure.__class__.__name__}"
                response = None
            else:
                if ok(response):
                    return response
                problem = f"{redact(url)} answered {response.status_code}"
            if attempt == self.retries:
                raise CacheError(f"{problem} (gave up after {self.retries + 1} tries)")
            wait = delay * (1 + random.random())
            if response is not None and response.headers.get("Retry-After", "").isdigit():
                wait = max(wait, min(float(response.headers["Retry-After"]), 30.0))
            log.warning("%s; retrying in %.1fs", problem, wait)
            time.sleep(wait)
            delay = min(delay * 2, 10.0)
        raise AssertionError("unreachable")

    # --- Blobs -------------------------------------------------------------------------------

    def has_blob(self, sha512: str) -> bool:
        if not self.download_cache_url:
            return False
        response = self._request("HEAD", f"{self.download_cache_url}/{sha512}")
        return response.status_code == 200

    def upload_blob(self, path: Path) -> str:
        """Upload a file to ShaCache (unless it is there already); answer its sha512."""
        if not self.upload_cache_url:
            raise CacheError("no upload URL is configured (upload-cache-url)")
        path = Path(path)
        sha512 = sha512_of_file(path, self.progress)
        if self.has_blob(sha512):
            log.info("%s is in the cache already", path.name)
            return sha512
        size = path.stat().st_size
        with open(path, "rb") as f, _progress(size, f"uploading {path.name}", self.progress) as bar:

            def rewind() -> None:
                f.seek(0)
                bar.reset(total=size)

            response = self._request(
                "POST",
                self.upload_cache_url,
                rewind=rewind,
                data=_ProgressReader(f, bar),
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                timeout=(self.timeout, 3600),
            )
        if response.status_code != 201:
            raise CacheError(self._refusal("upload", response))
        if response.text.strip() != sha512:
            raise CacheError(
                f"the server stored {response.text.strip()[:16]}..., not {sha512[:16]}...:"
                " the upload was corrupted on the way"
            )
        return sha512

    def download(self, sha512: str, dest: Path | str, *, resume: bool = False) -> Path:
        """Download a blob to ``dest``, resuming with Range, and verify its sha512.

        With ``resume``, what arrived is kept in ``partial_path(dest, sha512)`` when the
        download is interrupted (an error, Ctrl-C, a killed process), and the next call for the
        same blob asks only for the rest.  Nothing becomes ``dest`` unverified either way.
        """
        if not is_sha512(sha512):
            raise CacheError(f"{sha512[:40]!r} is not a sha512")
        if not self.download_cache_url:
            raise CacheError("no download URL is configured (download-cache-url)")
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        url = f"{self.download_cache_url}/{sha512}"
        if resume:
            temp_name = str(partial_path(dest, sha512))
            fd = os.open(temp_name, os.O_RDWR | os.O_CREAT, 0o600)
        else:
            fd, temp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
        try:
            with os.fdopen(fd, "r+b") as out:
                digest, received = hashlib.sha512(), 0
                while piece := out.read(PIECE):  # what an earlier try kept
                    digest.update(piece)
                    received += len(piece)
                if received:
                    log.info("resuming %s from %d bytes kept", dest.name, received)
                digest_hex = self._fetch(url, out, sha512, received, digest)
                out.flush()
                os.fsync(out.fileno())
            if digest_hex != sha512:
                Path(temp_name).unlink(missing_ok=True)  # a bad prefix is not kept
                raise CacheError(
                    f"blob {sha512[:16]}... from {redact(url)} is corrupt (it hashes to"
                    f" {digest_hex[:16]}...); it was not used"
                )
            os.replace(temp_name, dest)
        except BaseException:
            if not resume:
                Path(temp_name).unlink(missing_ok=True)
            raise
        return dest

    def _fetch(
        self, url: str, out: IO[bytes], sha512: str, received: int = 0, digest: Any = None
    ) -> str:
        """Stream the blob at ``url`` into ``out``, which holds ``received`` bytes already
        (hashed in ``digest``); answer the hex digest of the whole."""
        digest = digest or hashlib.sha512()
        total: int | None = None
        resumable = received > 0  # bytes kept from an earlier try: ask for the rest
        bar = None
        for attempt in range(self.retries + 1):
            headers = {"Range": f"bytes={received}-"} if received and resumable else {}
            response = self._request("GET", url, stream=True, headers=headers)
            if response.status_code == 404:
                raise CacheError(f"blob {sha512[:16]}... is not in the cache at {redact(url)}")
            restart = response.status_code == 416 and received  # kept more than the blob has
            if response.status_code not in (200, 206) and not restart:
                raise CacheError(self._refusal("download", response))
            if restart or (response.status_code == 200 and received):
                # The server ignored Range: start over rather than append a second copy.
                out.seek(0)
                out.truncate()
                digest, received = hashlib.sha512(), 0
                if restart:
                    response.close()
                    resumable = False
                    continue
            if total is None:
                total = _blob_size(response)
                resumable = total is not None and (
                    response.status_code == 206 or response.headers.get("Accept-Ranges") == "bytes"
                )
                bar = _progress(total, f"downloading {sha512[:12]}", self.progress)
                bar.update(received)
            try:
                for chunk in response.iter_content(READ_PIECE):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as broken:
                if attempt == self.retries:
                    raise CacheError(f"download of {redact(url)} kept breaking: {broken}") from None
                log.warning("download broke at %d bytes; resuming", received)
                if bar is not None:
                    bar.reset(total=total)
                    bar.update(received)
                continue
            finally:
                response.close()
            if total is None or received >= total:
                break
            log.warning("download ended early at %d of %d bytes; resuming", received, total)
        if bar is not None:
            bar.close()
        return digest.hexdigest()

    # --- Directory ---------------------------------------------------------------------------

    def _entries(self, key: str) -> list[list[str]]:
        if not self.download_dir_url:
            raise CacheError("no directory URL is configured (download-dir-url)")
        url = f"{self.download_dir_url}/{check_dir_key(key)}"
        response = self._request("GET", url)
        if response.status_code == 404:
            return []
        if response.status_code != 200:
            raise CacheError(self._refusal("directory read", response))
        try:
            pairs = response.json()
        except ValueError:
            raise CacheError(f"{redact(url)} did not answer JSON") from None
        if not isinstance(pairs, list):
            raise CacheError(f"{redact(url)} did not answer a JSON list")
        return pairs

    def lookup(self, key: str) -> list[EntryReport]:
        """Every entry under ``key``, newest first, with whether it is trusted and why."""
        reports = []
        for pair in reversed(self._entries(key)):
            if not (
                isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)
            ):
                reports.append(
                    EntryReport(None, json.dumps(pair)[:200], "", False, "malformed entry")
                )
                continue
            text, signature = pair
            try:
                metadata = parse_metadata(text)
            except InvalidEntry as problem:
                reports.append(EntryReport(None, text, signature, False, str(problem)))
                continue
            verdict = self.trust.verify(text, signature)
            trusted = verdict.trusted
            reason = verdict.reason
            if not trusted and not self.require_signature:
                trusted, reason = True, f"accepted without a trusted signature ({reason})"
            elif not trusted and not self.trust:
                reason += " (no trusted keys are configured: add some with --trust)"
            reports.append(EntryReport(metadata, text, signature, trusted, reason))
        return reports

    def select(self, key: str, wanted: Mapping[str, Any] | None = None) -> list[dict]:
        """Trusted entries under ``key`` whose metadata has every ``wanted`` value; newest first."""
        selected = []
        for report in self.lookup(key):
            if not report.trusted:
                log.info("ignoring an entry of %s: %s", key, report.reason)
                continue
            assert report.metadata is not None
            if all(report.metadata.get(k) == v for k, v in (wanted or {}).items()):
                selected.append(report.metadata)
        return selected

    def index(self, key: str, metadata: Mapping[str, Any]) -> None:
        """Sign ``metadata`` (which names a blob by ``sha512``) and add it under ``key``."""
        if not self.upload_dir_url:
            raise CacheError("no directory upload URL is configured (upload-dir-url)")
        text = json.dumps(dict(metadata), sort_keys=True)
        try:
            parse_metadata(text)
        except InvalidEntry as problem:
            raise CacheError(str(problem)) from None
        self._check_can_sign()
        body = json.dumps([text, sign_metadata(text, self.signing_keys)])
        response = self._request(
            "PUT",
            f"{self.upload_dir_url}/{check_dir_key(key)}",
            data=body.encode(),
            headers={"Content-Type": "application/json"},
        )
        if response.status_code != 201:
            raise CacheError(self._refusal("directory write", response))

    def upload(self, path: Path | str, key: str | None, metadata: Mapping[str, Any]) -> str:
        """Upload a file and, when ``key`` is given, a signed entry for it; answer its sha512."""
        if key is not None:
            check_dir_key(key)
            # Refuse before sending gigabytes that could never be indexed.
            self._check_can_sign()
        sha512 = self.upload_blob(Path(path))
        if key is not None:
            self.index(key, {**metadata, "sha512": sha512})
        return sha512

    def _check_can_sign(self) -> None:
        if not self.signing_keys and self.require_signature:
            raise CacheError(
                "no signing key is configured: entries must be signed (kiln cache keygen NAME,"
                " then --sign-with NAME.key)"
            )

    @staticmethod
    def _refusal(what: str, response: requests.Response) -> str:
        detail = response.text.strip()[:300]
        hint = ""
        if response.status_code == 401:
            hint = " (give credentials: http://USER:PASSWORD@host/ or a client certificate)"
        return f"{what} refused: {response.status_code} {detail}{hint}"
