"""What the CLI and the service share about transformations, without numpy or zarr: the
CLI imports this much only, so `kiln wendelin` commands stay quick to start."""

import json
from dataclasses import dataclass, field
from pathlib import Path

WAITING, RUNNING, CAUGHT_UP, FAILED = "waiting", "running", "caught up", "failed"
# The kinds, and the output of a policy's transformation of stream S: S.<suffix>.
SUFFIXES = {
    "wav-pcm": "pcm",
    "wav-channel": "channel",
    "wav-spectrum": "spectrum",
    "records": "columns",
}


class TransformError(ValueError):
    """A transformation that cannot go on with its input or outputs; says what is wrong."""


@dataclass(frozen=True, slots=True)
class Declaration:
    """One transformation of one stream, as declared (by hand or by a policy's rule)."""

    stream: str
    kind: str
    output: str  # the array name; a kind with several outputs derives the others from it
    params: dict = field(default_factory=dict)
    origin: str = "manual"  # or "policy:<name>"

    def same_work(self, other: "Declaration") -> bool:
        return (self.stream, self.kind, self.output, self.params) == (
            other.stream,
            other.kind,
            other.output,
            other.params,
        )


@dataclass(slots=True)
class Step:
    """What one step did: whether anything was committed, and why it waits when not."""

    advanced: bool = False
    waiting: str = ""


def status_path(root: str) -> Path:
    return Path(root) / "transforms" / "status.json"


def read_status(root: str) -> dict:
    """The last status the service wrote (for `kiln wendelin status`); empty if none."""
    try:
        return json.loads(status_path(root).read_text())
    except FileNotFoundError:
        return {"compute": None, "transforms": []}
