"""schemathesis hooks for ``fuzz_server.py`` (loaded through ``SCHEMATHESIS_HOOKS``): half of the bodies
sent to the generating routes ask for a stream, which schemathesis alone rarely draws. A body whose
``stream`` is already something else (a schema-violating value) keeps it."""

from __future__ import annotations

import hypothesis.strategies as st
import schemathesis

GENERATING = ("/v1/chat/completions", "/v1/completions")


@schemathesis.hook
def flatmap_body(context, body):
    if context.operation.path not in GENERATING or not isinstance(body, dict):
        return st.just(body)
    if body.get("stream") not in (None, False):
        return st.just(body)
    return st.sampled_from([body, {**body, "stream": True}])
