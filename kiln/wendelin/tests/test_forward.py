"""The forward protocol against a real server: every mode, acks, handshake, bad input."""

import socket
import ssl
import time

import msgpack
import pytest
import requests
from fluent import sender

from kiln.testing.forward_client import ForwardClient, HandshakeFailed, new_chunk_id
from kiln.testing.wendelin import ServerProcess, add_policy, server_certificate
from kiln.wendelin import eventtime

pytestmark = pytest.mark.integration


def entries_blob(*numbers: int) -> bytes:
    return b"".join(
        msgpack.packb([eventtime.pack(1_700_000_000 + n), {"n": n}], use_bin_type=True)
        for n in numbers
    )


def connect(deployment, policy: str = "turbines", **options) -> ForwardClient:
    credentials = getattr(deployment, policy)
    return ForwardClient(
        "127.0.0.1", deployment.forward_port, shared_key=credentials["shared_key"], **options
    )


MODES = ["message", "forward", "packed_str32", "packed_bin", "gzip", "zstd"]


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_is_stored_and_acked_after_commit(deployment, mode: str) -> None:
    tag = f"sensor.mode.{mode}"
    chunk_id = new_chunk_id()
    with connect(deployment) as client:
        if mode == "message":
            client.send_message(tag, eventtime.pack(1_700_000_000), {"n": 0}, chunk=chunk_id)
        elif mode == "forward":
            entries = [[eventtime.pack(1_700_000_000 + n), {"n": n}] for n in range(3)]
            client.send_forward(tag, entries, chunk=chunk_id)
        else:
            compressed = mode if mode in ("gzip", "zstd") else "text"
            client.send_packed(
                tag,
                entries_blob(0, 1, 2),
                chunk=chunk_id,
                compressed=compressed,
                as_str=mode != "packed_bin",
            )
        assert client.read_ack() == chunk_id
    expected = [{"n": 0}] if mode == "message" else [{"n": 0}, {"n": 1}, {"n": 2}]
    assert deployment.records(tag) == expected


def test_ack_echoes_fluentds_chunk_id_byte_for_byte(deployment) -> None:
    chunk_id = "q83vEjRWeJq83vEjRWeJqw==\n"  # base64 of 16 bytes plus newline, as out_forward
    with connect(deployment) as client:
        client.send_packed("sensor.bytes", entries_blob(1), chunk=chunk_id, size=1)
        raw = client.socket.recv(1024)
    assert raw == msgpack.packb({"ack": chunk_id})


def test_a_resent_chunk_is_acked_again_without_appending(deployment) -> None:
    chunk_id = new_chunk_id()
    for _ in range(3):  # fluentd resends after a lost ack, on a new connection
        with connect(deployment) as client:
            client.send_packed("sensor.resend", entries_blob(1, 2), chunk=chunk_id)
            assert client.read_ack() == chunk_id
    assert deployment.records("sensor.resend") == [{"n": 1}, {"n": 2}]


def test_pipelined_chunks_on_one_connection(deployment) -> None:
    ids = [new_chunk_id() for _ in range(200)]
    with connect(deployment) as client:
        for number, chunk_id in enumerate(ids):
            client.send_packed("sensor.pipeline", entries_blob(number), chunk=chunk_id)
        acked = {client.read_ack() for _ in ids}
    assert acked == set(ids)
    assert sorted(r["n"] for r in deployment.records("sensor.pipeline")) == list(range(200))


@pytest.mark.parametrize("salted", [True, False])
def test_both_anonymous_user_forms_of_out_forward_are_accepted(deployment, salted) -> None:
    with connect(deployment, salted_anonymous_password=salted) as client:
        assert client.server_hostname  # the PONG carried the server's own name and proof
        client.heartbeat()
        client.send_message("sensor.forms", 1_700_000_000, {"salted": salted}, chunk="c")
        assert client.read_ack() == "c"


def test_a_fluentd_on_the_same_machine_gets_a_pong_it_accepts(deployment) -> None:
    # out_forward's self_hostname defaults to the machine's name; a PONG with that same
    # name would be refused by it as coming from itself.
    with connect(deployment, hostname=socket.gethostname()) as client:
        assert client.server_hostname != socket.gethostname()


def test_wrong_shared_key_is_refused_with_a_reason(deployment) -> None:
    with pytest.raises(HandshakeFailed, match="shared_key mismatch"):
        ForwardClient("127.0.0.1", deployment.forward_port, shared_key="not the key")


def test_user_auth_policy_needs_the_right_user_and_password(deployment) -> None:
    user, password = deployment.auth("secure")
    with connect(deployment, "secure", username=user, password=password) as client:
        client.send_message("secure.a", 1_700_000_000, {"ok": 1}, chunk="s1")
        assert client.read_ack() == "s1"
    with pytest.raises(HandshakeFailed, match="username/password mismatch"):
        connect(deployment, "secure", username=user, password="wrong")
    with pytest.raises(HandshakeFailed, match="username/password mismatch"):
        connect(deployment, "secure")


def test_heartbeat_connections_run_the_handshake_and_close(deployment) -> None:
    for _ in range(3):  # out_forward's TCP heartbeat: connect, handshake, close
        connect(deployment).close()
    with connect(deployment) as client:
        for _ in range(5):
            client.heartbeat()
        client.send_message("sensor.hb", 1_700_000_000, {"alive": True}, chunk="hb")
        assert client.read_ack() == "hb"


def closed_without_ack(client: ForwardClient) -> bool:
    try:
        answer = client.read()
    except (EOFError, ConnectionError):
        return True
    raise AssertionError(f"expected the server to close, got {answer!r}")


@pytest.mark.parametrize(
    "bad",
    [
        "garbage",
        "wrong_ext",
        "truncated_blob",
        "oversized",
        "tag_not_accepted",
        "bad_compression",
        "not_an_array",
    ],
)
def test_a_bad_message_closes_only_its_connection_and_appends_nothing(deployment, bad) -> None:
    witness = connect(deployment)  # another client, mid-session, must not notice
    offender = connect(deployment)
    tag = "sensor.badfw"
    if bad == "garbage":
        offender.write_raw(b"\xc1\xc1\xc1")
    elif bad == "wrong_ext":
        offender.send_message(tag, msgpack.ExtType(9, b"\0" * 8), {"x": 1}, chunk="x")
    elif bad == "truncated_blob":
        offender.send_packed(tag, entries_blob(1)[:-2], chunk="x")
    elif bad == "oversized":
        offender.send_packed(tag, entries_blob(1) * 100_000, chunk="x")  # > 1 MiB limit
    elif bad == "tag_not_accepted":
        offender.send_packed("elsewhere.t", entries_blob(1), chunk="x")
    elif bad == "bad_compression":
        offender.send_packed(tag, entries_blob(1), chunk="x", compressed="lz4")
    elif bad == "not_an_array":
        offender.write({"hello": "world"})
    assert closed_without_ack(offender)
    offender.close()
    witness.send_message("sensor.witness", 1_700_000_000, {"fine": True}, chunk="w")
    assert witness.read_ack() == "w"
    witness.close()
    assert deployment.stream(tag) is None
    assert deployment.stream("elsewhere.t") is None


def test_entries_for_a_raw_byte_stream_close_the_connection(deployment) -> None:
    upload = requests.put(
        f"{deployment.url}/api/streams/sensor.fwrecording", data=b"RIFF", auth=deployment.auth()
    )
    assert upload.status_code == 201
    client = connect(deployment)
    client.send_packed("sensor.fwrecording", entries_blob(1), chunk="x")
    assert closed_without_ack(client)
    client.close()
    assert deployment.stream("sensor.fwrecording")["size"] == 4


def test_without_handshake_only_anonymous_policies_take_data(deployment) -> None:
    client = ForwardClient("127.0.0.1", deployment.forward_port)  # reads HELO, sends no PING
    client.send_message("secure.sneak", 1_700_000_000, {"x": 1}, chunk="x")
    assert closed_without_ack(client)
    assert deployment.stream("secure.sneak", "secure") is None


def test_fluent_logger_message_mode(deployment) -> None:
    logger = sender.FluentSender("sensor", port=deployment.forward_port, nanosecond_precision=True)
    try:
        for number in range(10):
            assert logger.emit("logger", {"number": number}), logger.last_error
    finally:
        logger.close()
    deadline = time.monotonic() + 10
    while len(deployment.records("sensor.logger")) < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert deployment.records("sensor.logger") == [{"number": n} for n in range(10)]


def test_forward_over_tls(tmp_path) -> None:
    issued = server_certificate(tmp_path)
    root = str(tmp_path / "root")
    credentials = add_policy(root, "tls")
    options = ("--forward-tls-cert", issued.certificate, "--forward-tls-key", issued.key)
    with ServerProcess(root, *options) as server:
        context = ssl.create_default_context(cafile=issued.ca)
        with ForwardClient(
            "127.0.0.1", server.forward_port, shared_key=credentials["shared_key"], tls=context
        ) as client:
            client.send_packed("over.tls", entries_blob(1), chunk="t")
            assert client.read_ack() == "t"
        with socket.create_connection(("127.0.0.1", server.forward_port)) as plain:
            plain.sendall(msgpack.packb(["over.tls", 1, {}]))
            plain.settimeout(5)
            assert plain.recv(100)[:1] in (b"", b"\x15", b"\x16")  # TLS alert or close
