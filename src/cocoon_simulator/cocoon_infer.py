"""Inference requests of the simulated client: validation, token plan, costs, answer bodies."""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Any

import orjson

from cocoon_simulator.cocoon_options import FAULT_MODES, SimulatorOptions
from cocoon_simulator.cocoon_script import ChoiceScript, plan_choices, scripted
from cocoon_simulator.cocoon_text import (
    CACHE_BLOCK_TOKENS,
    CHINESE_WORDS,
    ENGLISH_WORDS,
    MARKER_PREFIX,
    TEXT_BLOCK_BYTES,
    WordCycle,
    count_tokens,
    find_markers,
)

JSON_TYPE = b"application/json"
TEXT_TYPE = b"text/plain; charset=utf-8"
HTML_TYPE = b"text/html"
DEFAULT_MAX_TOKENS = 10000  # what the client inserts when a request has no max_tokens
DEFAULT_MAX_COEFFICIENT = 4000
ERROR_FAULTS: frozenset[str] = frozenset({"no_proxy", "no_workers", "timeout", "wallet_low", "html_error"})
_MESSAGE_OVERHEAD = 4  # chat tokens per message besides its content
_PROMPT_OVERHEAD = 3  # chat tokens for the assistant turn header
_MARKER_COUNT = re.compile(r"[0-9]{1,9}")  # a numeric [[sim:...=N]] marker's value
_HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


class RequestError(Exception):
    """A non-200 answer decided while reading a request."""

    def __init__(self, status: int, body: bytes, content_type: bytes = JSON_TYPE) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.content_type = content_type


def error_json(status: int, message: str, code: int | None = None) -> RequestError:
    """The client's JSON error shape: {"error_code": N, "error": message}."""
    return RequestError(status, orjson.dumps({"error_code": code or status, "error": message}))


def fault_error(fault: str, model: str) -> RequestError:
    """The answer of an error fault, shaped like the real client's (see reference table)."""
    if fault == "no_proxy":
        return RequestError(503, b"no working proxy connections", TEXT_TYPE)
    if fault == "no_workers":
        return error_json(502, f"Internal data: no ready workers for model {model}", 651)
    if fault == "timeout":
        return error_json(504, "Internal data: request timed out in the network")
    if fault == "wallet_low":
        return error_json(500, "Internal data: client wallet balance too low to pay for the request")
    return RequestError(502, _HTML_502, HTML_TYPE)


@dataclass(frozen=True, slots=True)
class ServedModel:
    """A model as served right now: its workers share one coefficient."""

    id: str
    reasoning: bool
    coefficient: int
    workers: int


@dataclass(slots=True)
class Prompt:
    """What the simulator needs from a prompt: its size, cache keys, seed and texts."""

    tokens: int
    keys: list[int]  # prefix-cache keys, shortest prefix first
    lengths: list[int]  # token length of each keyed prefix
    seed: int  # crc32 of the prompt text: drives answer length and words
    texts: list[str]
    last_user: str  # where [[sim:tokens=N]] and the translation form are looked for


def _content_text(content: Any) -> str:
    """Message content: a string, null, or an array whose "text" parts are joined."""
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if not isinstance(content, list):
        raise error_json(400, "message content must be a string or an array of parts")
    texts: list[str] = []
    for part in content:
        if not isinstance(part, dict):
            raise error_json(400, "message content parts must be objects")
        if part.get("type") == "text":  # other parts (images, ...) carry no text tokens
            text = part.get("text")
            if not isinstance(text, str):
                raise error_json(400, "a text part needs a string text")
            texts.append(text)
    return "".join(texts)


def chat_prompt(model: str, messages: Any) -> Prompt:
    """Chat prompt tokens = sum(tokens(content) + 4) + 3, cached at message granularity."""
    if not isinstance(messages, list) or not messages:
        raise error_json(400, "field messages must be a non-empty array")
    key = hash(("chat", model))
    crc = 0
    prefix = 0
    keys: list[int] = []
    lengths: list[int] = []
    texts: list[str] = []
    last_user = ""
    for message in messages:
        role = message.get("role") if isinstance(message, dict) else None
        # A role is required: it also keeps prompt_tokens below the body size (>= 11 bytes each).
        if not isinstance(role, str):
            raise error_json(400, "every message needs a string role")
        text = _content_text(message.get("content"))
        data = text.encode()
        crc = zlib.crc32(data, crc)
        prefix += count_tokens(data) + _MESSAGE_OVERHEAD
        key = hash((key, role, text))
        keys.append(key)
        lengths.append(prefix)
        texts.append(text)
        if role == "user":
            last_user = text
    return Prompt(prefix + _PROMPT_OVERHEAD, keys, lengths, crc, texts, last_user)


def text_prompt(model: str, prompt: Any) -> Prompt:
    """Completion prompt tokens = tokens(prompt), cached in whole 64-byte (16-token) blocks."""
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        prompt = "".join(prompt)
    if not isinstance(prompt, str):
        raise error_json(400, "field prompt must be a string or an array of strings")
    data = prompt.encode()
    key = hash(("text", model))
    keys: list[int] = []
    lengths: list[int] = []
    for end in range(TEXT_BLOCK_BYTES, len(data) + 1, TEXT_BLOCK_BYTES):
        key = hash((key, data[end - TEXT_BLOCK_BYTES : end]))
        keys.append(key)
        lengths.append(end // 4)
    return Prompt(count_tokens(data), keys, lengths, zlib.crc32(data), [prompt], prompt)


@dataclass(slots=True)
class Job:
    """A validated inference request, before faults and the prompt cache are applied."""

    chat: bool
    model: ServedModel
    prompt: Prompt
    body_size: int
    limit: int  # completion token bound (max_completion_tokens / max_tokens / 10000)
    stream: bool
    thinking: bool
    natural_tokens: int | None  # from [[sim:tokens=N]]
    marker_fault: str | None  # from [[sim:fault=...]]; "none" cancels a process-wide fault
    cost_off: bool  # [[sim:cost=0]]
    request: dict[str, Any] | None = None  # a chat request whose answer is planned (cocoon_script)
    calls: int | None = None  # [[sim:calls=N]]
    fault_attempt: int | None = None  # [[sim:fault_attempt=N]]: the fault strikes this arrival only
    overcount: int = 1  # [[sim:overcount=N]]


def decode_request(body: bytes) -> dict[str, Any]:
    """The body must be a JSON object."""
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise error_json(400, f"bad JSON: {exc}") from None
    if not isinstance(request, dict):
        raise error_json(400, "bad JSON: expected an object")
    return request


def _completion_limit(request: dict[str, Any]) -> int:
    """max_completion_tokens wins over max_tokens (as in vLLM); absent means 10000."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = request.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise error_json(400, f"field {name} must be a positive integer")
        return value
    return DEFAULT_MAX_TOKENS


def _check_coefficient(request: dict[str, Any], model: ServedModel) -> None:
    """Workers above the request's max_coefficient (default 4000) cannot take it: 502/652."""
    limit = request.get("max_coefficient")
    if limit is None:
        limit = DEFAULT_MAX_COEFFICIENT
    if not isinstance(limit, (int, float)) or isinstance(limit, bool):
        raise error_json(400, "field max_coefficient must be a number")
    if model.coefficient > limit:
        shown = int(limit) if float(limit).is_integer() else limit
        raise error_json(
            502,
            f"Internal data: no worker with coefficient <= {shown}; can run with coefficient {model.coefficient}",
            652,
        )


def _thinking(request: dict[str, Any]) -> bool:
    """Qwen3 thinks unless chat_template_kwargs.enable_thinking is false."""
    kwargs = request.get("chat_template_kwargs")
    return not (isinstance(kwargs, dict) and kwargs.get("enable_thinking") is False)


def _marker_count(text: str | None, name: str, least: int) -> int | None:
    """A numeric marker's value (None: absent); a 400 unless it is 1-9 ASCII digits, at least
    `least`. Not str.isdigit: it takes a superscript two, which int() then refuses (a 500), and
    other scripts' digits, which int() reads; and int() refuses over 4300 digits."""
    if text is None:
        return None
    if not _MARKER_COUNT.fullmatch(text) or int(text) < least:
        raise error_json(400, f"bad sim {name} {text}")
    return int(text)


def _read_markers(body: bytes, prompt: Prompt) -> tuple[int | None, str | None, bool, int | None, int | None, int]:
    """(tokens, fault, cost_off, calls, fault_attempt, overcount) from [[sim:...]] markers; tokens
    and calls only from the last user text."""
    if MARKER_PREFIX not in body:  # markers are never JSON-escaped, so the raw body tells
        return None, None, False, None, None, 1
    markers = find_markers(prompt.texts)
    unknown = set(markers) - {"tokens", "fault", "cost", "calls", "fault_attempt", "overcount"}
    if unknown:
        raise error_json(400, f"unknown sim marker {sorted(unknown)[0]}")
    fault = markers.get("fault")
    if fault is not None and fault != "none" and fault not in FAULT_MODES:
        raise error_json(400, f"unknown sim fault {fault}")
    attempt = _marker_count(markers.get("fault_attempt"), "fault_attempt", 1)
    last_user = find_markers([prompt.last_user])
    tokens = _marker_count(last_user.get("tokens"), "tokens", 0)
    if tokens is not None:
        tokens = max(1, tokens)  # answers are never empty
    calls = _marker_count(last_user.get("calls"), "calls", 0)
    overcount = _marker_count(markers.get("overcount"), "overcount", 1)
    return tokens, fault, markers.get("cost") == "0", calls, attempt, 1 if overcount is None else overcount


def read_job(body: bytes, request: dict[str, Any], chat: bool, models: dict[str, ServedModel]) -> Job:
    """Validate an inference request in the client's order: model, prompt, limits, worker fields."""
    name = request.get("model")
    if not isinstance(name, str) or not name:
        raise error_json(400, "field model is required")
    model = models.get(name)
    if model is None:
        raise error_json(400, f"unknown model {name}")
    prompt = chat_prompt(name, request.get("messages")) if chat else text_prompt(name, request.get("prompt"))
    limit = _completion_limit(request)
    _check_coefficient(request, model)
    stream = request.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise error_json(400, "field stream must be a boolean")
    tokens, fault, cost_off, calls, fault_attempt, overcount = _read_markers(body, prompt)
    thinking = chat and model.reasoning and _thinking(request)
    return Job(
        chat,
        model,
        prompt,
        len(body),
        limit,
        bool(stream),
        thinking,
        tokens,
        fault,
        cost_off,
        request if chat and scripted(request) else None,
        calls,
        fault_attempt,
        overcount,
    )


@dataclass(slots=True)
class Answer:
    """Everything needed to render one answer, streamed or not."""

    id: str
    created: int
    chat: bool
    model: str
    words: WordCycle
    offset: int
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    finish_reason: str
    prompt_cost: int
    completion_cost: int
    choices: list[ChoiceScript] | None = None  # a planned answer's choices (else one word stream)
    # The usage reports this many times the completion it generated, and its cost (a miscounting
    # or hostile network): [[sim:overcount=N]].
    overcount: int = 1


def _adjusted(tokens: int, coefficient: int, multiplier: int) -> int:
    """Network rule floor(n * coefficient/1000 * multiplier/10000), in integers."""
    return tokens * coefficient * multiplier // 10_000_000


def plan_answer(job: Job, seen_tokens: int, options: SimulatorOptions, answer_id: str, created: int) -> Answer:
    """Decide token counts and costs; `seen_tokens` is the longest cached prompt prefix."""
    prompt = job.prompt
    # The platform relies on prompt_tokens <= request body bytes; the formula keeps it, this enforces it.
    prompt_tokens = min(prompt.tokens, job.body_size)
    cached = min(seen_tokens, prompt_tokens) // CACHE_BLOCK_TOKENS * CACHE_BLOCK_TOKENS
    natural = job.natural_tokens
    if natural is None:
        lo, hi = options.default_completion_tokens
        natural = lo + prompt.seed % (hi - lo + 1)
    completion = min(natural, job.limit)
    reasoning = (max(1, completion // 4) if completion >= 2 else 0) if job.thinking else 0
    choices = None
    if job.request is not None:
        first = job.request["messages"][0]
        system = prompt.texts[0] if first.get("role") == "system" else ""
        choices = plan_choices(
            job.request,
            system,
            prompt.seed,
            job.calls,
            job.thinking,
            ENGLISH_WORDS,
            prompt.seed >> 12,
            natural,
            job.limit,
        )
        completion = sum(len(c.reasoning) + len(c.content) for c in choices)
        reasoning = sum(len(c.reasoning) for c in choices)
    prompt_cost = completion_cost = 0
    if options.report_total_cost and not job.cost_off:
        k, price = job.model.coefficient, options.price_per_token
        prompt_cost = price * (
            _adjusted(prompt_tokens - cached, k, options.prompt_multiplier)
            + _adjusted(cached, k, options.cached_multiplier)
        )
        completion_cost = price * (
            _adjusted(completion - reasoning, k, options.completion_multiplier)
            + _adjusted(reasoning, k, options.reasoning_multiplier)
        )
    translation = prompt.last_user.rstrip().endswith("<zh>")
    return Answer(
        id=answer_id,
        created=created,
        chat=job.chat,
        model=job.model.id,
        words=CHINESE_WORDS if translation else ENGLISH_WORDS,
        offset=prompt.seed >> 12,  # other bits than the length pick, so both vary independently
        prompt_tokens=prompt_tokens,
        cached_tokens=cached,
        completion_tokens=completion,
        reasoning_tokens=reasoning,
        finish_reason="length" if natural > job.limit else "stop",
        prompt_cost=prompt_cost,
        completion_cost=completion_cost,
        choices=choices,
        overcount=job.overcount,
    )


def usage(answer: Answer) -> dict[str, Any]:
    """The usage object, with both places reasoning tokens are reported and the cost fields."""
    completion, reasoning = answer.completion_tokens * answer.overcount, answer.reasoning_tokens * answer.overcount
    completion_cost = answer.completion_cost * answer.overcount
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": answer.prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": answer.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
        "reasoning_tokens": reasoning,
        "prompt_total_cost": answer.prompt_cost,
        "completion_total_cost": completion_cost,
        "total_cost": answer.prompt_cost + completion_cost,
    }


def response_body(answer: Answer) -> bytes:
    """A complete non-streaming chat.completion or text_completion document."""
    if answer.choices is not None:
        return _planned_body(answer, answer.choices)
    reasoning = answer.reasoning_tokens
    content = answer.words.text(answer.offset + reasoning, answer.completion_tokens - reasoning)
    if answer.chat:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": content,
            "reasoning_content": answer.words.text(answer.offset, reasoning) if reasoning else None,
            "tool_calls": [],
        }
        choice: dict[str, Any] = {"index": 0, "message": message}
        kind = "chat.completion"
    else:
        choice = {"index": 0, "text": content}
        kind = "text_completion"
    choice["logprobs"] = None
    choice["finish_reason"] = answer.finish_reason
    choice["stop_reason"] = None  # the word stream ends by itself or at the limit (see token_events)
    return orjson.dumps(
        {
            "id": answer.id,
            "object": kind,
            "created": answer.created,
            "model": answer.model,
            "choices": [choice],
            "usage": usage(answer),
        }
    )


def _planned_body(answer: Answer, choices: list[ChoiceScript]) -> bytes:
    return orjson.dumps(
        {
            "id": answer.id,
            "object": "chat.completion",
            "created": answer.created,
            "model": answer.model,
            "choices": [
                {
                    "index": index,
                    "message": {
                        "role": "assistant",
                        "content": "".join(choice.content),
                        "reasoning_content": "".join(choice.reasoning) or None,
                        "tool_calls": [],
                    },
                    "logprobs": None,
                    "finish_reason": choice.finish_reason,
                    "stop_reason": choice.stop_reason,
                }
                for index, choice in enumerate(choices)
            ],
            "usage": usage(answer),
        }
    )


def _planned_events(answer: Answer, choices: list[ChoiceScript], bare: bool) -> list[bytes]:
    """One chunk per token of each choice in turn (a role chunk first, the finish last, which
    alone carries the choice's `stop_reason`: vLLM sets it only there, and leaves unset fields out).
    Written from byte templates, as orjson would write each chunk's object (a test holds them to
    it): encoding every chunk whole made the simulator, not the platform, the measure of a
    benchmark's planned answers."""
    start, end = (b"", b"\n") if bare else (b"data: ", b"\n\n")
    head = b"".join(
        (
            start,
            b'{"id":',
            orjson.dumps(answer.id),
            b',"object":"chat.completion.chunk","created":',
            str(answer.created).encode(),
            b',"model":',
            orjson.dumps(answer.model),
            b',"choices":[{"index":',
        )
    )
    middle = b'},"logprobs":null,"finish_reason":null}]}' + end
    events: list[bytes] = []
    for index, choice in enumerate(choices):
        opening = head + str(index).encode() + b',"delta":{'
        deltas = [b'"role":"assistant","content":""']
        deltas.extend(b'"reasoning_content":' + orjson.dumps(token) for token in choice.reasoning)
        deltas.extend(b'"content":' + orjson.dumps(token) for token in choice.content)
        last = b"".join(
            (
                b'},"logprobs":null,"finish_reason":',
                orjson.dumps(choice.finish_reason),
                b',"stop_reason":',
                orjson.dumps(choice.stop_reason),
                b"}]}",
                end,
            )
        )
        events.extend(opening + delta + middle for delta in deltas[:-1])
        events.append(opening + deltas[-1] + last)
    return events


def token_events(answer: Answer, bare: bool) -> list[bytes]:
    """One framed chunk per completion token; SSE `data: ...\\n\\n` or bare JSON lines. A chat
    answer's last chunk carries `stop_reason`, a completion's every chunk, as vLLM sets it; here
    always null (a chat request with `stop` is planned by cocoon_script; completions ignore it)."""
    if answer.choices is not None:
        return _planned_events(answer, answer.choices, bare)
    start, end = (b"", b"\n") if bare else (b"data: ", b"\n\n")
    kind = b"chat.completion.chunk" if answer.chat else b"text_completion"
    head = b"".join(
        (
            start,
            b'{"id":"',
            answer.id.encode(),
            b'","object":"',
            kind,
            b'","created":',
            str(answer.created).encode(),
            b',"model":',
            orjson.dumps(answer.model),
            b',"choices":[{"index":0,' + (b'"delta":{' if answer.chat else b""),
        )
    )
    close = b"}" if answer.chat else b""
    stop_field = b"" if answer.chat else b',"stop_reason":null'
    middle = close + b',"logprobs":null,"finish_reason":null' + stop_field + b"}]}" + end
    last = (
        close + b',"logprobs":null,"finish_reason":"' + answer.finish_reason.encode() + b'","stop_reason":null}]}' + end
    )
    count, reasoning, offset, words = answer.completion_tokens, answer.reasoning_tokens, answer.offset, answer.words
    events: list[bytes] = []
    for i in range(count):
        if answer.chat:
            key = b'"reasoning_content":' if i < reasoning else b'"content":'
            if i == 0:
                key = b'"role":"assistant",' + key
        else:
            key = b'"text":'
        events.append(head + key + words.json_token(offset + i) + (last if i == count - 1 else middle))
    return events


def final_events(answer: Answer, bare: bool) -> bytes:
    """The usage chunk (choices: []) and, for SSE, the [DONE] line."""
    chunk = orjson.dumps(
        {
            "id": answer.id,
            "object": "chat.completion.chunk" if answer.chat else "text_completion",
            "created": answer.created,
            "model": answer.model,
            "choices": [],
            "usage": usage(answer),
        }
    )
    return chunk + b"\n" if bare else b"data: " + chunk + b"\n\ndata: [DONE]\n\n"
