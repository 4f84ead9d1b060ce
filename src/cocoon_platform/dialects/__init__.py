"""Other APIs' wire formats (dialects) served on the one metered chat path.

A dialect translates its request into a chat request, and the chat answer (whole or streamed)
and every error back into its own shape. Nothing else differs: the translated body goes through
the same checks and network field filter as a chat body (`proxy.request.prepare_request`,
ruling 7), and the request is reserved, forwarded, settled, recorded and rate limited by the
same handler (`proxy.handler`), under the dialect's own endpoint name and id prefix.

- `responses.py`: OpenAI's Responses API (`POST /v1/responses`).
- `messages.py`: Anthropic's Messages API (`POST /v1/messages`, `/v1/messages/count_tokens`).
- `chat.py`: what both read from chat answers and chunks.
- `templates.py`: the bytes templates both write their stream events from.

The platform keeps no conversation: every request carries its whole input.
"""

from __future__ import annotations

from typing import Any, Protocol

from cocoon_platform.errors import PlatformError
from cocoon_platform.proxy.relay import TextStream


class DialectStream(TextStream, Protocol):
    """One streamed answer's translation, fed the relay's chat chunks as they arrive
    (`proxy.relay.read_texts`; `chat.frame_chunks` for chunks the tool support rewrote)."""

    def finish(self, usage: dict[str, Any]) -> bytes:
        """The closing events, with the usage and its cost."""
        ...

    def fail(self, error: PlatformError) -> bytes:
        """The closing events of a stream the network or a deadline cut."""
        ...


class Translated(Protocol):
    """One request of a dialect, translated: the chat body to forward, and what the answer
    needs of the original request."""

    chat: dict[str, Any]

    def answer(self, document: dict[str, Any], answer_id: str) -> dict[str, Any]:
        """The dialect's answer for a chat completion whose usage carries its cost."""
        ...

    def stream(self, answer_id: str, model: str) -> DialectStream: ...


class Dialect(Protocol):
    endpoint: str  # the usage records' and metrics' name for it
    id_prefix: str  # of the request id, which is the answer's id

    def translate(self, body: dict[str, Any]) -> Translated:
        """A decoded body of this dialect as a chat request (raises PlatformError)."""
        ...

    def error(self, exc: PlatformError) -> bytes:
        """An error answer's body in the dialect's shape."""
        ...
