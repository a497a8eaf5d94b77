"""Garbage collection: remove blobs that no ShaDir entry references."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from kiln.shacache.storage import BlobStore, DirStore


@dataclass
class GcReport:
    kept: int = 0
    removed: list[str] = field(default_factory=list)  # sha512 of each blob removed
    too_young: int = 0
    freed_bytes: int = 0


def referenced_blobs(dirs: DirStore) -> set[str]:
    referenced: set[str] = set()
    for _key, entries in dirs.iter_keys():
        for entry in entries:
            try:
                sha512 = json.loads(entry.metadata_text).get("sha512")
            except ValueError:
                continue
            if isinstance(sha512, str):
                referenced.add(sha512)
    return referenced


def collect(blobs: BlobStore, dirs: DirStore, *, min_age_seconds: float, dry_run: bool) -> GcReport:
    """Remove unreferenced blobs older than ``min_age_seconds``.

    The age threshold protects uploads in flight: a client uploads the blob first and writes
    its entry a moment later.
    """
    referenced = referenced_blobs(dirs)
    now = time.time()
    report = GcReport()
    for blob in blobs.iter_blobs():
        if blob.sha512 in referenced:
            report.kept += 1
            continue
        if now - blob.modified < min_age_seconds:
            report.too_young += 1
            continue
        report.removed.append(blob.sha512)
        report.freed_bytes += blob.size
        if not dry_run:
            blobs.remove(blob.sha512)
    return report
