"""The appliance's fluentd configuration, and the snippet a remote fluentd uses to send to it.

The appliance's fluentd:
- in_forward for remote agents, with a shared key generated for this instance (and TLS when
  certificates are given);
- in_unix, a socket in a 0700 directory, for the instance's own producers (the monitor agent);
- in_tail on the instance's service logs, with pos files;
- out_forward with require_ack_response to the instance's Wendelin: a chunk leaves the file
  buffer only once Wendelin has fsynced it, and retries never stop, so a Wendelin restart
  loses nothing (Wendelin drops a resent chunk it already has: nothing is duplicated).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kiln.monitor.parameters import MonitorParameters, tag_part

# The services of the instance whose logs fluentd tails (supervisor writes var/log/<name>.log).
TAILED_LOGS = ("wendelin", "monitor", "shacache")


def quote(value: str | Path) -> str:
    """A fluentd single-quoted string: no "#{...}" Ruby interpolation, only \\' and \\\\."""
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


@dataclass(frozen=True)
class Paths:
    """Where the instance keeps fluentd's state; all under the instance directory."""

    root: Path

    @property
    def socket_dir(self) -> Path:
        return self.root / "var" / "run" / "fluentd"

    @property
    def socket(self) -> Path:
        return self.socket_dir / "fluentd.sock"

    @property
    def state(self) -> Path:
        return self.root / "srv" / "fluentd"

    @property
    def buffer(self) -> Path:
        return self.state / "buffer" / "wendelin"

    @property
    def pos_dir(self) -> Path:
        return self.state / "pos"

    @property
    def log_dir(self) -> Path:
        return self.root / "var" / "log"


def self_hostname(parameters: MonitorParameters) -> str:
    # out_forward refuses a PONG that carries its own self_hostname, so the appliance must
    # not answer with the name a fluentd on the same machine would use ("#{Socket.gethostname}").
    return f"kiln-appliance@{parameters.hostname}"


def appliance_config(
    parameters: MonitorParameters,
    paths: Paths,
    shared_key: str,
    wendelin_shared_key: str,
    instance_name: str,
) -> str:
    tls = ""
    if parameters.tls_cert is not None:
        tls = (
            "  <transport tls>\n"
            f"    cert_path {quote(parameters.tls_cert)}\n"
            f"    private_key_path {quote(parameters.tls_key or '')}\n"
            "  </transport>\n"
        )
    tails = "".join(
        f"""
<source>
  @type tail
  @id tail_{name}
  path {quote(paths.log_dir / f"{name}.log")}
  pos_file {quote(paths.pos_dir / f"{name}.log.pos")}
  tag log.{parameters.hostname}.{tag_part(instance_name)}.{name}
  read_from_head true
  <parse>
    @type none
  </parse>
</source>
"""
        for name in TAILED_LOGS
    )
    return f"""\
# The appliance's fluentd, written by `kiln monitor configure` at every `kiln instance up`
# from the instance parameters (change those, not this file: it is rewritten).
# It holds shared keys: mode 0600.

<system>
  log_level info
</system>

# Remote agents: fluentd out_forward with this shared key (`kiln instance up
# software/monitor` prints a ready configuration).  A wrong key is refused and logged.
<source>
  @type forward
  @id remote_agents
  bind {quote(parameters.forward_bind)}
  port {parameters.forward_port}
{tls}  <security>
    self_hostname {quote(self_hostname(parameters))}
    shared_key {quote(shared_key)}
  </security>
</source>

# The instance's own producers (the monitor agent): a unix socket in a 0700 directory, so
# only this instance's user can write to it.
<source>
  @type unix
  @id local_producers
  path {quote(paths.socket)}
</source>

# The instance's service logs, one stream each: log.<host>.<instance>.<service>.
{tails}
# Wendelin logs one line per forward connection, and fluentd's own deliveries are such
# connections: forwarding those lines would feed a line a second back to Wendelin forever.
<filter log.{parameters.hostname}.{tag_part(instance_name)}.wendelin>
  @type grep
  <exclude>
    key message
    pattern / INFO kiln\\.wendelin\\.forward: forward /
  </exclude>
</filter>

# fluentd's own events stay in fluentd's log.
<label @FLUENT_LOG>
  <match **>
    @type null
  </match>
</label>

# Everything to Wendelin, acknowledged: a chunk is deleted from the file buffer only after
# Wendelin has fsynced it.  Retries never stop, so nothing is lost while Wendelin restarts;
# a chunk resent after a lost ack is acknowledged by Wendelin without a second copy.
<match **>
  @type forward
  @id wendelin
  require_ack_response true
  ack_response_timeout 30s
  <security>
    self_hostname {quote(parameters.hostname)}
    shared_key {quote(wendelin_shared_key)}
  </security>
  <server>
    host 127.0.0.1
    port {parameters.wendelin_forward_port}
  </server>
  <buffer>
    @type file
    path {quote(paths.buffer)}
    flush_mode interval
    flush_interval {parameters.flush_interval:g}s
    flush_at_shutdown true
    retry_forever true
    retry_max_interval 5s
    chunk_limit_size 8m
  </buffer>
</match>
"""


def remote_agent_snippet(parameters: MonitorParameters, shared_key: str) -> str:
    """What a remote fluentd adds to send its events to this appliance, acknowledged."""
    tls = "  transport tls\n  tls_verify_hostname true\n" if parameters.tls else ""
    return f"""\
# Send a fluentd's events to this appliance (fluentd v1 out_forward), acknowledged:
# paste into the remote fluentd's configuration and change the <match> pattern and the
# buffer path as you like.  It holds the appliance's shared key: keep the file private.
<match **>
  @type forward
  require_ack_response true
{tls}  <security>
    self_hostname "#{{Socket.gethostname}}"
    shared_key {quote(shared_key)}
  </security>
  <server>
    host {parameters.advertise_host}
    port {parameters.forward_port}
  </server>
  <buffer>
    @type file
    path /var/lib/fluentd/buffer/kiln-appliance
    flush_interval 1s
    retry_forever true
  </buffer>
</match>
"""
