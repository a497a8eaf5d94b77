"""The sample fluentd configuration matches what the service serves and `policy add` prints.

fluentd itself cannot be installed on the build machines (no Ruby gem registry), so this checks
the file's content; test_fluentd_config.py sends through it with the parameters it holds.
"""

import os
import re

import pytest

pytestmark = pytest.mark.unit

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "fluentd.conf")


def example() -> str:
    with open(EXAMPLE) as config:
        return config.read()


def sections(text: str, name: str) -> list[str]:
    return re.findall(rf"<{name}[^>]*>(.*?)</{name}>", text, re.S)


def test_forward_output_waits_for_acks_and_runs_the_handshake() -> None:
    text = example()
    forward = next(block for block in sections(text, "match") if "@type forward" in block)
    assert re.search(r"^\s*require_ack_response true$", forward, re.M)
    security = sections(forward, "security")[0]
    assert "shared_key \"#{ENV['WENDELIN_SHARED_KEY']}\"" in security
    assert "self_hostname" in security
    assert "ENV.fetch('WENDELIN_FORWARD_PORT', '24224')" in sections(forward, "server")[0]


def test_wendelin_output_uses_wendelins_own_url_layout() -> None:
    text = example()
    wendelin = next(block for block in sections(text, "match") if "@type wendelin" in block)
    uri = re.search(r"streamtool_uri \"(.*)\"", wendelin).group(1)  # type: ignore[union-attr]
    assert uri.endswith("/erp5/portal_ingestion_policies/#{ENV['WENDELIN_POLICY']}")
    assert "user \"#{ENV['WENDELIN_USER']}\"" in wendelin
    assert "password \"#{ENV['WENDELIN_PASSWORD']}\"" in wendelin
    # Every tag this file routes is accepted by the policy the header tells you to create.
    header_pattern = re.search(r"--tag-pattern '([^']+)'", text).group(1)  # type: ignore[union-attr]
    from kiln.wendelin.policies import tag_matcher

    for match_pattern in re.findall(r"<match (\S+)>", text):
        example_tag = match_pattern.replace("**", "t1")
        assert tag_matcher(header_pattern).fullmatch(example_tag), match_pattern
