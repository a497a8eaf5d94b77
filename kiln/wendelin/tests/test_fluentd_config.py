"""The sample fluentd configuration, read as fluentd reads it, drives real traffic.

fluentd itself cannot be installed on the build machines: Debian has no fluentd package and
the Ruby gem registry is out of reach. So this test does what fluentd would do with
``examples/fluentd.conf``: it reads the file (directives, parameters, ``"#{ENV[...]}"``
interpolation), sets the environment exactly as the file's header says after ``policy add``,
and sends through every ``<match>`` with the parameters found there, using the peers fluentd's
outputs are modelled on: our forward client for ``out_forward`` (shared-key handshake, acks)
an HTTP POST as fluent-plugin-wendelin makes it (``<streamtool_uri>/ingest?reference=``), and
one as fluentd's ``out_http`` makes it (its endpoint, ``<auth>``, and the ndjson body and
Content-Type of its default json format).
A parameter the service does not accept fails here.
"""

import os
import re
import shlex
import socket
from dataclasses import dataclass, field

import msgpack
import pytest
import requests

from kiln.testing.forward_client import ForwardClient, new_chunk_id
from kiln.testing.wendelin import ServerProcess, add_policy
from kiln.wendelin import eventtime

pytestmark = pytest.mark.integration

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "fluentd.conf")


@dataclass
class Directive:
    name: str
    argument: str
    parameters: dict[str, str] = field(default_factory=dict)
    children: list["Directive"] = field(default_factory=list)

    def child(self, name: str) -> "Directive":
        return next(child for child in self.children if child.name == name)


def _interpolate(value: str, environment: dict[str, str]) -> str:
    """fluentd evaluates ``#{...}`` in double-quoted values as Ruby; the sample uses three."""

    def evaluate(match: re.Match[str]) -> str:
        code = match.group(1)
        if code == "Socket.gethostname":
            return socket.gethostname()
        if found := re.fullmatch(r"ENV\['(\w+)'\]", code):
            return environment.get(found.group(1), "")
        if found := re.fullmatch(r"ENV\.fetch\('(\w+)', '([^']*)'\)", code):
            return environment.get(found.group(1), found.group(2))
        raise AssertionError(f"the sample uses Ruby this reader does not know: {code}")

    return re.sub(r"#\{([^}]*)\}", evaluate, value)


def read_config(text: str, environment: dict[str, str]) -> Directive:
    """fluentd's config syntax: ``<name argument>`` blocks, ``key value`` lines, # comments."""
    root = Directive("ROOT", "")
    stack = [root]
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("</"):
            closed = stack.pop()
            assert line == f"</{closed.name}>", f"{line} closes <{closed.name}>"
        elif line.startswith("<"):
            name, _, argument = line[1:-1].partition(" ")
            directive = Directive(name, argument.strip())
            stack[-1].children.append(directive)
            stack.append(directive)
        else:
            key, _, value = line.partition(" ")
            value = value.strip()
            if value.startswith('"') and value.endswith('"'):
                value = _interpolate(value[1:-1], environment)
            stack[-1].parameters[key] = value
    assert stack == [root], "unclosed directive"
    return root


def entries(*numbers: int) -> bytes:
    return b"".join(
        msgpack.packb([eventtime.pack(1_700_000_000 + n), {"n": n}], use_bin_type=True)
        for n in numbers
    )


@pytest.fixture()
def configured(tmp_path):
    """A running service, and the environment the sample's header tells the user to export."""
    with open(EXAMPLE) as example:
        text = example.read()
    # The header's own command: `kiln wendelin policy add turbines --tag-pattern '...' --root`
    command = re.search(r"kiln wendelin policy add (.+) --root", text).group(1)  # type: ignore[union-attr]
    name, _, pattern = shlex.split(command)
    root = str(tmp_path / "root")
    credentials = add_policy(root, name, "--tag-pattern", pattern)
    with ServerProcess(root) as server:
        environment = {
            "WENDELIN_URL": server.url,
            "WENDELIN_FORWARD_HOST": "127.0.0.1",
            "WENDELIN_FORWARD_PORT": str(server.forward_port),
            "WENDELIN_POLICY": name,
            "WENDELIN_USER": credentials["user"],
            "WENDELIN_PASSWORD": credentials["password"],
            "WENDELIN_SHARED_KEY": credentials["shared_key"],
        }
        yield server, credentials, read_config(text, environment)


def stored_numbers(server: ServerProcess, credentials: dict[str, str], tag: str) -> list[int]:
    return stored_numbers_of(server, credentials, tag, "n")


def stored_numbers_of(
    server: ServerProcess, credentials: dict[str, str], tag: str, field_name: str
) -> list[int]:
    auth = (credentials["user"], credentials["password"])
    answer = requests.get(
        f"{server.url}/api/streams/{tag}/entries", params={"format": "json"}, auth=auth, timeout=10
    )
    answer.raise_for_status()
    return [record[field_name] for _, record in answer.json()]


def matches(config: Directive, output_type: str) -> list[Directive]:
    return [
        child
        for child in config.children
        if child.name == "match" and child.parameters.get("@type") == output_type
    ]


def test_the_forward_output_as_configured_gets_acks_after_the_handshake(configured) -> None:
    server, credentials, config = configured
    (forward,) = matches(config, "forward")
    assert forward.parameters["require_ack_response"] == "true"
    security = forward.child("security")
    target = forward.child("server")
    tag = forward.argument.replace("**", "turbine7")
    chunk_id = new_chunk_id()
    with ForwardClient(
        target.parameters["host"],
        int(target.parameters["port"]),
        shared_key=security.parameters["shared_key"],
        hostname=security.parameters["self_hostname"],
    ) as client:
        client.send_packed(tag, entries(1, 2, 3), chunk=chunk_id)
        assert client.read_ack() == chunk_id
    assert stored_numbers(server, credentials, tag) == [1, 2, 3]


def test_the_wendelin_output_as_configured_posts_to_wendelins_url_layout(configured) -> None:
    server, credentials, config = configured
    (wendelin,) = matches(config, "wendelin")
    tag = wendelin.argument.replace("**", "line2")
    url = wendelin.parameters["streamtool_uri"] + "/ingest"
    auth = (wendelin.parameters["user"], wendelin.parameters["password"])
    body = entries(7, 8)
    for _ in range(2):  # a resend after a lost answer, as fluentd's retry makes it
        answer = requests.post(url, params={"reference": tag}, data=body, auth=auth, timeout=10)
        assert answer.status_code == 204, answer.text
    assert stored_numbers(server, credentials, tag) == [7, 8]


def test_the_http_output_as_configured_posts_ndjson_to_the_tag_endpoint(configured) -> None:
    server, credentials, config = configured
    (output,) = matches(config, "http")
    assert output.parameters["retryable_response_codes"] == "[503]"
    assert output.child("buffer").argument == "tag"  # so ${tag} has a value
    tag = output.argument.replace("**", "door.opened")
    url = output.parameters["endpoint"].replace("${tag}", tag)
    auth_section = output.child("auth")
    assert auth_section.parameters["method"] == "basic"
    auth = (auth_section.parameters["username"], auth_section.parameters["password"])
    body = b'{"door": 1}\n{"door": 2}\n'  # out_http's json format: one record per line
    headers = {"Content-Type": "application/x-ndjson"}
    answer = requests.post(url, data=body, headers=headers, auth=auth, timeout=10)
    assert answer.status_code == 204, answer.text
    assert stored_numbers_of(server, credentials, tag, "door") == [1, 2]
