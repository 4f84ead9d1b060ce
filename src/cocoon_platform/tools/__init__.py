"""Tool calling on a network that refuses `tools`: the platform plays the chat template's part.

The COCOON network fails any request carrying `tools`, `tool_choice`, a message's `tool_calls`
or a `tool` message, yet its chat models (Qwen3) were trained to call tools through their chat
template. So the platform does what the template would have done, and the reverse on the answer:

- `offer.py`: what a chat request offers (tools, `tool_choice`, `parallel_tool_calls`), read and
  checked, with each tool's JSON Schema compiled once (cached by schema text).
- `hermes.py`: the request side for models whose catalog entry says `tool_format: hermes`:
  the tools rendered into the system message and the tool history into plain messages, byte for
  byte as Qwen3's template renders them, so the model sees what it was trained on.
- `answer.py`: the answer side: reasoning split off, `<tool_call>` blocks found and checked
  against the offer; valid calls become OpenAI `tool_calls`, anything else stays text.
- `stream.py`: the same for streams, chunk by chunk.

Other dialects (Responses, Messages) translate into a chat body and call the same functions.
"""
