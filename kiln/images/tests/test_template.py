"""Template validation: the model, variables, and errors that name file, key and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kiln.images.template import TemplateError, load_template, parse_template

pytestmark = pytest.mark.unit
APPLIANCE = Path(__file__).resolve().parents[3] / "images" / "appliance.yaml"


def minimal(**changes) -> dict:
    data = {
        "name": "t",
        "variables": {"port": 8420},
        "source": {"release": "bookworm"},
        "releases": ["software/wendelin"],
        "instances": [
            {
                "name": "wendelin",
                "release": "software/wendelin",
                "parameters": {"http-port": "{{ port }}"},
                "ports": {"http": "{{ port }}"},
            }
        ],
        "tests": [{"check": "ingest", "instance": "wendelin"}, "ssh"],
    }
    data.update(changes)
    return data


def error_of(data, **kwargs) -> str:
    with pytest.raises(TemplateError) as caught:
        parse_template(Path("t.yaml"), data, environ={}, **kwargs)
    return str(caught.value)


def test_appliance_template_is_valid():
    template = load_template(APPLIANCE, environ={})
    assert template.name == "appliance"
    assert template.releases == ["software/wendelin", "software/monitor"]
    assert [i.name for i in template.instances] == ["wendelin", "monitor"]
    assert template.instance("wendelin").ports == {"http": 8420, "forward": 24224}
    assert template.outputs == ["qcow2", "raw"]
    assert template.source.mirror is None  # read from the machine's apt configuration
    assert {t.check for t in template.tests} == {"ingest", "monitor", "ssh", "fresh-credentials"}


def test_variables_default_environment_and_var_in_that_order():
    assert parse_template(Path("t"), minimal(), environ={}).instances[0].ports["http"] == 8420
    env = {"KILN_VAR_port": "9000"}
    assert parse_template(Path("t"), minimal(), environ=env).instances[0].main_port == 9000
    template = parse_template(Path("t"), minimal(), {"port": "9100"}, environ=env)
    assert template.instances[0].parameters == {"http-port": "9100"}


def test_digest_follows_the_resolved_values():
    a = parse_template(Path("t"), minimal(), environ={})
    b = parse_template(Path("t"), minimal(), {"port": "1"}, environ={})
    assert a.digest() == parse_template(Path("t"), minimal(), environ={}).digest()
    assert a.digest() != b.digest()


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"colour": "red"}, "t.yaml: colour: unknown key; allowed: name, description"),
        ({"outputs": ["vmdk"]}, "t.yaml: outputs[0]: 'vmdk' is not allowed; allowed: qcow2, raw"),
        ({"source": {"release": "bookworm", "architecture": "s390x"}}, "source.architecture"),
        ({"source": {}}, "t.yaml: source.release: missing (required)"),
        ({"source": {"release": "bookworm", "mirror": "ftp://x"}}, "an http(s):// or file:// URL"),
        ({"tests": [{"check": "ping"}]}, "tests[0].check: 'ping'; allowed: ingest, monitor, ssh"),
        (
            {"tests": [{"check": "ingest", "instance": "x"}]},
            "names one of the instances (wendelin)",
        ),
        ({"releases": ["wendelin"]}, "releases[0]: 'wendelin' is not a valid name"),
        ({"packages": ["Bad Name"]}, "packages[0]: 'Bad Name' is not a valid name"),
        ({"name": "Bad_Name"}, "t.yaml: name: 'Bad_Name'"),
        ({"disk_size_mb": 100}, "disk_size_mb: 100: at least 1024"),
        ({"firstboot": {"status_port": 70000}}, "firstboot.status_port: expected a TCP port"),
    ],
)
def test_errors_name_the_key_and_what_is_allowed(changes, expected):
    assert expected in error_of(minimal(**changes))


def test_an_instance_of_a_release_not_installed_is_refused():
    data = minimal(releases=["software/monitor"])
    assert "instances[0].release: 'software/wendelin' is not installed" in error_of(data)


def test_unknown_variable_and_undeclared_var_are_refused():
    data = minimal(description="{{ nope }}")
    assert "description: unknown variable {{ nope }}" in error_of(data)
    assert "--var colour: not declared" in error_of(minimal(), overrides={"colour": "x"})


def test_a_variable_without_default_must_be_given():
    data = minimal(variables={"port": None})
    assert "variables.port: no default; give --var port=VALUE or $KILN_VAR_port" in error_of(data)


def test_file_errors_name_the_file(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(TemplateError, match=r"broken.yaml: not valid YAML"):
        load_template(broken)
    with pytest.raises(TemplateError, match=r"missing.yaml: cannot read"):
        load_template(tmp_path / "missing.yaml")
    listed = tmp_path / "list.yaml"
    listed.write_text(yaml.safe_dump(["a"]))
    with pytest.raises(TemplateError, match=r"list.yaml: \(top level\): expected a mapping"):
        load_template(listed)


def test_the_ec2_variant_is_a_variable_of_the_appliance():
    assert load_template(APPLIANCE, environ={}).ec2 is False
    assert load_template(APPLIANCE, {"ec2": "true"}, environ={}).ec2 is True
    with pytest.raises(TemplateError, match="ec2: expected bool, got 'yes'"):
        load_template(APPLIANCE, {"ec2": "yes"}, environ={})
