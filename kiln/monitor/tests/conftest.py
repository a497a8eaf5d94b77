"""fluentd 1.16.11 from ../shared/peers/, unpacked once per session and verified by the pin."""

from kiln.testing.fluentd import fluentd_program  # noqa: F401  (a fixture)
