"""Why data was not stored: the typed refusals of the ingest path.

The router (and the stream store and chunk checks under it) raises these; nothing of the
refused data is stored. Each input answers them in one place: HTTP in
``httputil.answer_refusal``, the forward protocol by closing the connection without an ack
(``inputs.forward``). The message is for the sender, and names the problem.
"""


class Refusal(Exception):
    """Data refused, nothing of it stored; ``str()`` tells the sender why."""


class Malformed(Refusal, ValueError):
    """Input that will never be accepted as it is: bad msgpack, JSON, form or entries."""


class TagRejected(Refusal):
    """The policy may not write to this tag (pattern, stream name, or another's stream)."""


class Conflict(Refusal):
    """The data does not fit the stream: its kind, or a new stream's name is taken."""


class TooLarge(Refusal):
    """A body larger than the configured limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"body larger than the limit of {limit} bytes")
        self.limit = limit


class Unavailable(Refusal):
    """A transient refusal (full disk, overload, shutting down): retry after ``retry_after``."""

    def __init__(self, reason: str, retry_after: int = 5) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
