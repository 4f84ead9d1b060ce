"""The request side of the Hermes tool format (Qwen3): tools and tool history as plain messages.

Qwen3's chat template renders `messages` + `tools` byte for byte as it renders, without tools:
- the first system message's content + `"\\n\\n"` + the tools text (or, with no system message
  first, a new system message holding the tools text alone); the tools text is `# Tools`, each
  tool's JSON (`tojson`) on its own line inside `<tools></tools>`, and the `<tool_call>` instruction;
- an assistant message's `tool_calls` appended to its content, one
  `<tool_call>\\n{"name": "N", "arguments": ARGS}\\n</tool_call>` block per call (`"\\n"` between
  the content, if any, and the first call, and between calls), ARGS being the `arguments` string
  as the client sent it;
- each run of `tool` messages as one user message: its `<tool_response>\\n...\\n</tool_response>`
  blocks joined by `"\\n"`.
So that is what is sent (tests render both sides with the template itself and compare). A first
`developer` message counts as the system message (it is sent as `system`, ruling 3).

`tool_choice` `required` or a named function adds one sentence after the template's text, and
`parallel_tool_calls: false` another: the template has no words for them.
"""

from __future__ import annotations

from typing import Any

from cocoon_platform.errors import InvalidRequest
from cocoon_platform.tools.offer import NAMED, REQUIRED, ToolOffer, tojson

TOOLS_HEAD = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_TAIL = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}'
    "\n</tool_call>"
)
REQUIRED_INSTRUCTION = "You must call at least one of these functions now: answer with <tool_call></tool_call> blocks."
NAMED_INSTRUCTION = 'You must call the function "{name}" now: answer with a <tool_call></tool_call> block for it.'
SINGLE_INSTRUCTION = "Call at most one function in your answer."


def tools_text(offer: ToolOffer | None) -> str:
    """The system text that offers the tools (empty when none are offered)."""
    return offer_text(offer)[0]


def offer_text(offer: ToolOffer | None) -> tuple[str, int]:
    """`tools_text` and its UTF-8 size, made once per set and way of offering it (`ToolSet.texts`)."""
    if offer is None or not offer.offered:
        return "", 0
    texts = offer.tool_set.texts
    way = (offer.choice, offer.named, offer.parallel)
    made = texts.get(way)
    if made is None:
        parts = [TOOLS_HEAD, offer.tool_set.lines, TOOLS_TAIL]
        if offer.choice == REQUIRED:
            parts.append("\n\n" + REQUIRED_INSTRUCTION)
        elif offer.choice == NAMED:
            parts.append("\n\n" + NAMED_INSTRUCTION.format(name=offer.named))
        if not offer.parallel:
            parts.append("\n\n" + SINGLE_INSTRUCTION)
        text = "".join(parts)
        made = texts[way] = (text, len(text.encode()))
    return made


def has_tool_history(messages: list[dict[str, Any]]) -> bool:
    """Whether any message carries tool calls or a tool result (checked roles, any content)."""
    return any(message["role"] == "tool" or message.get("tool_calls") for message in messages)


def render_messages(messages: list[dict[str, Any]], text: str, history: bool = True) -> list[dict[str, Any]]:
    """`messages` (roles already checked) as the network takes them, with `text` (`tools_text`:
    the tools offered, if any) in the system message and the tool history as plain text;
    `history` False says they hold none (no tool calls or results: `has_tool_history`), and they
    are not looked through. Raises InvalidRequest for a malformed tool call or tool message."""
    out = _history_as_text(messages) if history else list(messages)
    if text:
        first = out[0]
        if first["role"] in ("system", "developer"):
            out[0] = {**first, "role": "system", "content": _text(first.get("content"), 0) + "\n\n" + text}
        else:
            out.insert(0, {"role": "system", "content": text})
    return out


def _history_as_text(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`messages` with each assistant's tool calls in its content and each run of tool results as
    one user message."""
    out: list[dict[str, Any]] = []
    run: list[str] = []  # the tool responses of the current run of tool messages
    for index, message in enumerate(messages):
        role = message["role"]
        if role == "tool":
            run.append("<tool_response>\n" + _text(message.get("content"), index) + "\n</tool_response>")
            continue
        if run:
            out.append({"role": "user", "content": "\n".join(run)})
            run = []
        if role == "assistant" and "tool_calls" in message:
            out.append(_assistant(message, index))
        else:
            out.append(message)
    if run:
        out.append({"role": "user", "content": "\n".join(run)})
    return out


def _text(content: Any, index: int) -> str:
    """A message's content as the template takes it: text parts joined by a newline (as vLLM does)."""
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list):
        return "\n".join(part["text"] for part in content)  # parts checked by parse_request
    raise InvalidRequest(f"messages[{index}].content must be a string", param=f"messages[{index}].content")


def _assistant(message: dict[str, Any], index: int) -> dict[str, Any]:
    calls = message["tool_calls"]
    if calls is None:
        calls = []
    if not isinstance(calls, list):
        raise InvalidRequest(f"messages[{index}].tool_calls must be an array", param=f"messages[{index}].tool_calls")
    content = _text(message.get("content"), index)
    parts = [content]
    for position, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            function = call  # the template also takes a bare {"name", "arguments"}
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name:
            raise InvalidRequest(
                f"messages[{index}].tool_calls[{position}].function.name must be a string",
                param=f"messages[{index}].tool_calls",
            )
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            arguments = tojson(arguments, f"messages[{index}].tool_calls")
        if position or content:
            parts.append("\n")
        parts.append('<tool_call>\n{"name": "' + name + '", "arguments": ' + arguments + "}\n</tool_call>")
    out = {key: value for key, value in message.items() if key != "tool_calls"}
    out["content"] = "".join(parts)
    return out
