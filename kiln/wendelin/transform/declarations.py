"""What transformations are declared, kept in ``<root>/transforms/declared.json`` (0600).

Two sorts: **jobs**, started by hand for one stream and output (`kiln wendelin transform
run`), and **rules**, declared per ingestion policy (`kiln wendelin policy transform add`):
every stream of the policy whose name matches the rule's pattern gets the rule's
transformation, into the array ``<stream>.<suffix>``. The CLI changes the file (atomic
replace, under a lock against a concurrent CLI) and the service rereads it when it changes,
as it does for policies in the catalog.

A file beside the catalog rather than catalog tables: the catalog interface has several
implementations (SQLite, PostgreSQL) and this is the service's own configuration, read by
the service alone.
"""

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kiln.common.durable import write_atomically
from kiln.wendelin.policies import tag_matcher
from kiln.wendelin.stream_reader import StreamReader
from kiln.wendelin.streams import check_stream_name
from kiln.wendelin.transform.model import SUFFIXES, Declaration, TransformError


@dataclass(frozen=True, slots=True)
class Rule:
    policy: str
    stream_pattern: str  # fluentd <match> syntax, as a policy's tag pattern
    kind: str
    params: dict = field(default_factory=dict)

    def declaration_for(self, stream: StreamReader) -> Declaration | None:
        """The rule's transformation of ``stream``, if the stream is the rule's."""
        if stream.policy != self.policy:
            return None
        if tag_matcher(self.stream_pattern).fullmatch(stream.name) is None:
            return None
        output = f"{stream.name}.{SUFFIXES[self.kind]}"
        return Declaration(stream.name, self.kind, output, self.params, f"policy:{self.policy}")


@dataclass(slots=True)
class Declared:
    jobs: list[Declaration] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    # Per output, a number `transform retry` increments: the service retries when it changes.
    retries: dict[str, int] = field(default_factory=dict)

    def declarations(self, streams: list[StreamReader]) -> list[Declaration]:
        """Every transformation to run: the jobs, then the rules' over existing streams."""
        found = list(self.jobs)
        for rule in self.rules:
            for stream in streams:
                declaration = rule.declaration_for(stream)
                if declaration is not None:
                    found.append(declaration)
        return found


def path_of(root: str) -> Path:
    return Path(root) / "transforms" / "declared.json"


def load(root: str) -> Declared:
    try:
        document = json.loads(path_of(root).read_text())
    except FileNotFoundError:
        return Declared()
    return Declared(
        jobs=[Declaration(**job) for job in document.get("jobs", [])],
        rules=[Rule(**rule) for rule in document.get("rules", [])],
        retries=dict(document.get("retries", {})),
    )


def version(root: str) -> tuple[int, int] | None:
    """Changes when the file is replaced (cheap to ask every second)."""
    try:
        status = os.stat(path_of(root))
    except FileNotFoundError:
        return None
    return status.st_mtime_ns, status.st_ino


@contextmanager
def changing(root: str) -> Iterator[Declared]:
    """Load, let the caller change, and save atomically; one CLI at a time."""
    directory = path_of(root).parent
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        declared = load(root)
        yield declared
        document = {
            "jobs": [asdict(job) for job in declared.jobs],
            "rules": [asdict(rule) for rule in declared.rules],
            "retries": declared.retries,
        }
        write_atomically(path_of(root), json.dumps(document, indent=1).encode())
    finally:
        os.close(descriptor)


def check(declaration: Declaration) -> None:
    """TransformError if the declaration cannot run (bad kind, params or names)."""
    for what, name in (("stream", declaration.stream), ("output", declaration.output)):
        try:
            check_stream_name(name)  # arrays follow the stream-name rules too
        except ValueError as problem:
            raise TransformError(f"{what}: {problem}") from None
    from kiln.wendelin.transform.kinds import transformation  # numpy: only when checking

    transformation(declaration)
