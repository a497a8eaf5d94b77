"""An EC2 instance-metadata stand-in, for booting EC2 images under qemu (`kiln image test`).

EC2 itself cannot run here; what an EC2 image meets at first boot can: its root disk on an
NVMe controller (qemu's `-device nvme`) and the instance metadata service (IMDS) at
169.254.169.254, which cloud-init's Ec2 datasource reads.  This server answers what that
datasource asks, the way IMDSv2 does: a session token from `PUT /latest/api/token` (with its
TTL header), then `GET /<version>/meta-data/...` (listings and leaves, the SSH key under
`public-keys/0/openssh-key`) and `GET /<version>/user-data`, each with the token; a request
without a valid token gets 401, as on an instance that requires IMDSv2.

The guest reaches it through qemu's user networking: `net=169.254.0.0/16` puts 169.254.169.254
inside slirp's network, and `guestfwd=tcp:169.254.169.254:80-cmd:...` runs
`python -m kiln.images.imds relay PORT` for each guest connection, which copies bytes between
the connection and this server on 127.0.0.1 (a `guestfwd` to a chardev would carry only one
connection).
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ADDRESS = "169.254.169.254"
# slirp's network must contain ADDRESS for a guestfwd to it (its default is 10.0.2.0/24).
SLIRP_NET = "169.254.0.0/16"
GUEST_IP = "169.254.2.15"  # the first address slirp's DHCP gives in that network
GUEST_MAC = "52:54:00:12:34:56"  # qemu's first NIC
TOKEN_TTL = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN = "X-aws-ec2-metadata-token"
VERSION = re.compile(r"/(latest|\d{4}-\d{2}-\d{2})/(meta-data|user-data|dynamic)(/.*)?\Z")


def smbios(instance_id: str) -> list[str]:
    """The qemu options that make the machine's DMI read as an EC2 instance's (Nitro): vendor
    "Amazon EC2", a system UUID starting with ec2 and the same serial number.  cloud-init
    identifies the platform from them, and only on AWS does its Ec2 datasource use IMDSv2
    tokens (elsewhere it asks without one, as IMDSv1; this stand-in refuses that, as an
    instance requiring IMDSv2 does)."""
    tail = instance_id.removeprefix("i-").rjust(12, "0")[-12:]
    uuid = f"ec2e1916-9099-7caf-fd21-{tail}"
    # cloud-init also wants the serial number equal to the UUID, as EC2's DMI has it.
    return ["-smbios", f"type=1,manufacturer=Amazon EC2,product=t3.large,uuid={uuid},serial={uuid}"]


def metadata_leaves(instance_id: str, hostname: str, public_key: str) -> dict[str, str]:
    """The meta-data tree's leaves, by path, as an EC2 instance's (the fields cloud-init uses)."""
    nic = {
        "device-number": "0",
        "interface-id": "eni-0000000000000kiln",
        "local-ipv4s": GUEST_IP,
        "mac": GUEST_MAC,
        "subnet-ipv4-cidr-block": SLIRP_NET,
        "vpc-ipv4-cidr-block": SLIRP_NET,
    }
    return {
        "ami-id": "ami-0000000000000kiln",
        "ami-launch-index": "0",
        "hostname": f"{hostname}.kiln.internal",
        "instance-id": instance_id,
        "instance-type": "t3.large",
        "local-hostname": f"{hostname}.kiln.internal",
        "local-ipv4": GUEST_IP,
        "mac": GUEST_MAC,
        **{f"network/interfaces/macs/{GUEST_MAC}/{name}": value for name, value in nic.items()},
        "placement/availability-zone": "kiln-local-1a",
        "placement/region": "kiln-local-1",
        "public-keys/0/openssh-key": public_key.strip() + "\n",
        "services/domain": "amazonaws.com",
        "services/partition": "aws",
    }


def listing(leaves: dict[str, str], directory: str) -> str | None:
    """What IMDS answers for a directory: its entries, sub-directories ending with `/`."""
    prefix = f"{directory}/" if directory else ""
    entries: dict[str, None] = {}
    for path in leaves:
        if path.startswith(prefix):
            head, sep, _ = path[len(prefix) :].partition("/")
            entries[head + ("/" if sep else "")] = None
    if not entries:
        return None
    if directory == "public-keys":  # IMDS lists keys as INDEX=NAME
        return "0=kiln-boot"
    return "\n".join(entries)


class MetadataServer:
    """IMDSv2 on 127.0.0.1 (a free port), serving one instance's meta-data and user-data."""

    def __init__(self, public_key: str, user_data: str, hostname: str = "kiln") -> None:
        self.instance_id = f"i-{secrets.token_hex(8)}"
        self.leaves = metadata_leaves(self.instance_id, hostname, public_key)
        self.user_data = user_data
        self.tokens: set[str] = set()
        self.requests: list[str] = []  # "METHOD PATH STATUS", what the guest asked
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def guestfwd(self) -> list[str]:
        """The `-netdev user` options that put this server at http://169.254.169.254/."""
        relay = f"{sys.executable} -m kiln.images.imds relay {self.port}"
        return [f"net={SLIRP_NET}", f"guestfwd=tcp:{ADDRESS}:80-cmd:{relay}"]

    def answer(self, method: str, path: str, headers) -> tuple[int, str, str]:
        """(status, content type, body) for one request."""
        path = path.split("?", 1)[0]
        if method == "PUT":
            if path != "/latest/api/token":
                return 404, "text/plain", "Not Found"
            ttl = headers.get(TOKEN_TTL, "")
            if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                return 400, "text/plain", f"{TOKEN_TTL} must be 1 to 21600"
            token = secrets.token_urlsafe(32)
            self.tokens.add(token)
            return 200, "text/plain", token
        if headers.get(TOKEN) not in self.tokens:
            return 401, "text/plain", "Unauthorized: IMDSv2 requires a session token"
        match = VERSION.match(path)
        if not match:
            return 404, "text/plain", "Not Found"
        kind, rest = match[2], (match[3] or "").strip("/")
        if kind == "user-data":
            return 200, "application/octet-stream", self.user_data
        if kind == "dynamic":
            if rest in ("", "instance-identity"):  # listings
                return 200, "text/plain", "instance-identity/" if not rest else "document"
            if rest == "instance-identity/document":
                document = {
                    "instanceId": self.instance_id,
                    "region": self.leaves["placement/region"],
                    "availabilityZone": self.leaves["placement/availability-zone"],
                    "instanceType": self.leaves["instance-type"],
                    "imageId": self.leaves["ami-id"],
                    "architecture": "x86_64",
                    "privateIp": GUEST_IP,
                }
                return 200, "application/json", json.dumps(document)
            return 404, "text/plain", "Not Found"
        if rest in self.leaves:
            return 200, "text/plain", self.leaves[rest]
        if rest == "public-keys/0":
            return 200, "text/plain", "openssh-key"
        if (text := listing(self.leaves, rest)) is not None:
            return 200, "text/plain", text
        return 404, "text/plain", "Not Found"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        metadata = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self) -> None:
                status, kind, body = metadata.answer(self.command, self.path, self.headers)
                metadata.requests.append(f"{self.command} {self.path} {status}")
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = _reply

            def log_message(self, *args: object) -> None:
                pass

        return Handler


def relay(port: int) -> None:
    """Copy bytes between stdin/stdout (slirp's guest connection) and 127.0.0.1:port."""
    upstream = socket.create_connection(("127.0.0.1", port))

    def to_upstream() -> None:
        try:
            while data := sys.stdin.buffer.read1(65536):
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                upstream.shutdown(socket.SHUT_WR)

    threading.Thread(target=to_upstream, daemon=True).start()
    while data := upstream.recv(65536):
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "relay" and sys.argv[2].isdigit():
        relay(int(sys.argv[2]))
    else:
        sys.exit("usage: python -m kiln.images.imds relay PORT")
