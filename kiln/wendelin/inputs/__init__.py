"""The inputs: each takes data in one protocol and emits it to the router (``router.py``).

An input decodes its wire format, authenticates its sender to a policy, and hands the router
``(policy, tag or stream name, events | chunk | raw byte pieces, dedup key)``; it never writes
a stream itself. It answers the router's refusals (``refusals.py``) in its one place: the HTTP
inputs through ``httputil.answer_refusal``, the forward protocol by closing without an ack.

* ``http_ingest``: fluent-plugin-wendelin's ingest, and ``/tags`` for curl and out_http;
* ``forward``: the fluentd forward protocol over TCP (``forward_handshake``: its handshake);
* ``stream_api``: the stream API's manual append and upload;
* ``forms``: the web pages' append and upload forms.
"""
