"""HTTP ingest against the client libraries fluentd itself is made of: Ruby's Net::HTTP, as
fluent-plugin-wendelin posts with it, and msgpack-ruby, which packs fluentd's buffer chunks.

fluentd cannot be installed here (no gem registry), but Debian packages both libraries; what
they put on the wire (Net::HTTP's default form Content-Type, msgpack-ruby's str and bin,
EventTime's ext type) is then what the server really gets from fluentd, not our own reading
of it. `.ci/run` installs them (`ruby`, `ruby-msgpack` in `.ci/apt-packages.txt`).
"""

import json
import shutil
import struct
import subprocess
from pathlib import Path

import msgpack
import pytest
import requests

pytestmark = pytest.mark.integration

SENDER = Path(__file__).parent / "ruby-peer" / "post_chunks.rb"


@pytest.fixture(scope="module")
def ruby() -> str:
    ruby = shutil.which("ruby")
    if ruby is None or subprocess.run([ruby, "-rmsgpack", "-e", ""]).returncode != 0:
        pytest.fail(
            "Ruby and msgpack-ruby are needed: install the Debian packages ruby and ruby-msgpack"
        )
    return ruby


def post_chunks(
    ruby: str, tmp_path: Path, deployment, tag: str, password: str | None = None, **settings: object
) -> tuple[int, list[dict], bytes]:
    """Run the Ruby sender to ``tag`` with the turbines policy's user (and its password unless
    another is given): its exit status, one answer per request, and the bytes it sent."""
    user, right_password = deployment.auth()
    sent = tmp_path / "sent.bin"
    settings = {
        **settings,
        "url": ingest_url(deployment, tag),
        "user": user,
        "password": password or right_password,
        "sent": str(sent),
    }
    done = subprocess.run(
        [ruby, str(SENDER), json.dumps(settings)], capture_output=True, text=True, timeout=120
    )
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    return done.returncode, answers, sent.read_bytes()


def ingest_url(deployment, tag: str, policy: str = "turbines") -> str:
    # The path Wendelin serves, as an existing streamtool_uri names it.
    return f"{deployment.url}/erp5/portal_ingestion_policies/{policy}/ingest?reference={tag}"


def stored_bytes(deployment, tag: str) -> bytes:
    response = requests.get(
        f"{deployment.url}/api/streams/{tag}/entries",
        params={"limit": 100000},
        auth=deployment.auth(),
        timeout=30,
    )
    return response.content if response.ok else b""


def test_chunks_and_their_resends_are_stored_once_byte_for_byte(deployment, ruby, tmp_path):
    status, answers, sent = post_chunks(
        ruby, tmp_path, deployment, "sensor.ruby", chunks=20, records=200, resend=True
    )
    assert status == 0, answers
    # Each chunk twice, as after a lost answer: the first stored, the second recognised.
    assert [(answer["status"], answer["duplicate"]) for answer in answers] == [
        (204, None),
        (204, "already stored"),
    ] * 20
    stored = stored_bytes(deployment, "sensor.ruby")
    assert stored == sent
    # What fluentd's msgpack library made is kept as it was: EventTime with its nanoseconds,
    # binary strings as bin, text as str.
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    unpacker.feed(stored)
    entries = list(unpacker)
    assert len(entries) == 20 * 200
    when, record = entries[201]  # chunk 1, record 1
    assert when.code == 0 and struct.unpack(">II", when.data) == (1_700_000_001, 1007)
    assert record["raw"] == struct.pack(">II", 1, 1)
    assert record["site"] == "éolienne-1" and record["tags"] == ["wind", {"level": 1}]
    assert deployment.stream("sensor.ruby")["entries"] == 20 * 200


def test_the_older_plugins_form_body_is_stored_the_same(deployment, ruby, tmp_path):
    status, answers, sent = post_chunks(
        ruby, tmp_path, deployment, "sensor.rubyform", chunks=3, records=50, form=True
    )
    assert status == 0 and [answer["status"] for answer in answers] == [204] * 3, answers
    assert stored_bytes(deployment, "sensor.rubyform") == sent


@pytest.mark.parametrize(
    ("tag", "password", "status", "message"),
    [
        ("sensor.rubyauth", "not the password", 401, "wrong or missing credentials"),
        ("elsewhere.ruby", None, 403, "does not accept tag 'elsewhere.ruby'"),
    ],
)
def test_refusals_reach_the_ruby_client_as_errors(
    deployment, ruby, tmp_path, tag: str, password: str | None, status: int, message: str
):
    code, answers, _ = post_chunks(
        ruby, tmp_path, deployment, tag, password=password, chunks=2, records=5
    )
    # Never a 2xx, so fluentd keeps (and reports) the chunk instead of dropping it silently.
    assert code == 1 and len(answers) == 1, answers
    assert answers[0]["status"] == status and message in answers[0]["body"]
    assert deployment.stream(tag) is None
