"""A real service process shared by the integration tests of one module."""

from dataclasses import dataclass

import pytest
import requests

from kiln.testing.fluentd import fluentd_program  # noqa: F401  (a fixture)
from kiln.testing.postgres import postgres_server  # noqa: F401  (a fixture)
from kiln.testing.wendelin import ServerProcess, add_policy


@dataclass
class Deployment:
    server: ServerProcess
    turbines: dict[str, str]  # tags sensor.**, anonymous forward allowed (fluent-logger)
    secure: dict[str, str]  # tags secure.**, forward user auth required

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def forward_port(self) -> int:
        return self.server.forward_port

    def auth(self, policy: str = "turbines") -> tuple[str, str]:
        credentials = getattr(self, policy)
        return credentials["user"], credentials["password"]

    def stream(self, name: str, policy: str = "turbines") -> dict | None:
        response = requests.get(f"{self.url}/api/streams/{name}", auth=self.auth(policy))
        return response.json() if response.ok else None

    def records(self, name: str, policy: str = "turbines") -> list[dict]:
        response = requests.get(
            f"{self.url}/api/streams/{name}/entries",
            params={"format": "json", "limit": 100000},
            auth=self.auth(policy),
        )
        return [record for _, record in response.json()] if response.ok else []


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory):
    root = str(tmp_path_factory.mktemp("wendelin"))
    turbines = add_policy(root, "turbines", "--tag-pattern", "sensor.**", "--anonymous-forward")
    secure = add_policy(root, "secure", "--tag-pattern", "secure.**", "--forward-user-auth")
    server = ServerProcess(root, "--max-chunk-mib", "1").start()
    yield Deployment(server, turbines, secure)
    assert server.stop() == 0, server.log()
