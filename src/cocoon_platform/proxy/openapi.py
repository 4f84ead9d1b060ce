"""OpenAPI description of the inference endpoints, which bypass FastAPI's routing for speed."""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from cocoon_platform.errors import (
    InsufficientBalance,
    InvalidApiKey,
    InvalidRequest,
    UpstreamBusy,
    UpstreamError,
    openapi_responses,
    published_error_enums,
)

ERROR: dict[str, Any] = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
USAGE = {
    "type": "object",
    "description": "Token usage statistics for billing, with the request's cost.",
    "properties": {
        "prompt_tokens": {"type": "integer"},
        "completion_tokens": {"type": "integer"},
        "total_tokens": {"type": "integer"},
        "prompt_tokens_details": {"type": "object", "properties": {"cached_tokens": {"type": "integer"}}},
        "completion_tokens_details": {"type": "object", "properties": {"reasoning_tokens": {"type": "integer"}}},
        "cost_nanoton": {"type": "integer", "description": "What this request cost, in nanoTON."},
        "cost_ton": {"type": "number", "description": "The same in TON."},
    },
}
COMMON_FIELDS: dict[str, Any] = {
    "model": {"type": "string", "description": "Model ID to use. Get available models from GET /v1/models."},
    "stream": {"type": "boolean", "default": False, "description": "Stream as server-sent events."},
    "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
    "max_tokens": {"type": "integer", "minimum": 1, "description": "Maximum tokens to generate. Capped at 128000."},
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    "top_p": {"type": "number"},
    "stop": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
    "seed": {"type": "integer"},
    "n": {"type": "integer", "minimum": 1, "maximum": 16},
}
CONTENT = {
    "oneOf": [
        {"type": "string"},
        {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type", "text"],
                "properties": {"type": {"type": "string", "enum": ["text"]}, "text": {"type": "string"}},
            },
        },
    ]
}


TOOL_CALLS = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "type": {"type": "string", "enum": ["function"]},
            "function": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "arguments": {"type": "string", "description": "The arguments as JSON text"},
                },
            },
        },
    },
}


def _operation(
    operation_id: str, summary: str, required: str, fields: dict[str, Any], result: dict[str, Any]
) -> dict[str, Any]:
    return {
        "tags": ["AI Inference"],
        "summary": summary,
        "operationId": operation_id,
        "security": [{"bearerAuth": []}],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["model", required],
                        "properties": {**COMMON_FIELDS, **fields},
                    }
                }
            },
        },
        "responses": {
            "200": {
                "description": "The completion (or an SSE stream of chunks ending in `data: [DONE]`).",
                "headers": {"X-Request-Id": {"schema": {"type": "string"}}},
                "content": {"application/json": {"schema": result}, "text/event-stream": {}},
            },
            **openapi_responses(
                InvalidRequest(f"model and {required} are required"),
                InvalidApiKey(),
                InsufficientBalance("Insufficient balance: 0.0000 TON. Minimum: 0.01 TON. Top up via /v1/deposit."),
                UpstreamError(502, "No COCOON workers are available", "no_workers"),
                UpstreamError(503, "The COCOON network is unavailable right now.", "unavailable"),
                UpstreamBusy(),
                UpstreamError(504, "The COCOON network timed out on this request.", "timeout"),
            ),
            "422": {
                "description": "Validation error (malformed request body)",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}},
            },
        },
    }


def _result(object_name: str, choice: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": [object_name]},
            "model": {"type": "string"},
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"index": {"type": "integer"}, **choice, "finish_reason": {"type": "string"}},
                },
            },
            "usage": {"$ref": "#/components/schemas/Usage"},
        },
    }


PATHS = {
    "/v1/chat/completions": {
        "post": _operation(
            "createChatCompletion",
            "Create a chat completion",
            "messages",
            {
                "messages": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["role"],
                        "properties": {
                            "role": {
                                "type": "string",
                                "enum": ["system", "user", "assistant", "developer", "tool"],
                                "description": "`developer` is sent to the model as `system`.",
                            },
                            "content": {"oneOf": [CONTENT, {"type": "null"}]},
                            "tool_calls": TOOL_CALLS,
                            "tool_call_id": {"type": "string"},
                        },
                    },
                },
                "max_completion_tokens": {"type": "integer", "minimum": 1},
                "reasoning_effort": {"type": "string"},
                "chat_template_kwargs": {"type": "object"},
                "response_format": {
                    "type": "object",
                    "description": '`{"type": "text"}`, `{"type": "json_object"}` or `{"type": '
                    '"json_schema", "json_schema": {"name": ..., "schema": {...}, "strict": true}}` '
                    "(a name of 1-64 letters, digits, _ or -, a schema that is a valid JSON Schema); "
                    "any other shape is a 400 naming the field.",
                },
                "tools": {
                    "type": "array",
                    "description": "Function tools, written into the prompt in the model's own "
                    "format (the network takes no `tools`); that text is billed as prompt tokens.",
                    "items": {
                        "type": "object",
                        "required": ["type", "function"],
                        "properties": {
                            "type": {"type": "string", "enum": ["function"]},
                            "function": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "description": {"type": "string"},
                                    "parameters": {"type": "object", "description": "A JSON Schema"},
                                },
                            },
                        },
                    },
                },
                "tool_choice": {
                    "description": "`none`, `auto`, `required` or a named function. When a call is required "
                    "and the model made none, it is asked once more; both attempts are billed.",
                    "oneOf": [
                        {"type": "string", "enum": ["none", "auto", "required"]},
                        {
                            "type": "object",
                            "properties": {
                                "type": {"type": "string", "enum": ["function"]},
                                "function": {"type": "object", "properties": {"name": {"type": "string"}}},
                            },
                        },
                    ],
                },
                "parallel_tool_calls": {"type": "boolean", "description": "false keeps only the first call."},
            },
            _result(
                "chat.completion",
                {
                    "message": {
                        "type": "object",
                        "properties": {
                            "role": {"type": "string"},
                            "content": {"type": ["string", "null"]},
                            "reasoning_content": {"type": ["string", "null"]},
                            "tool_calls": TOOL_CALLS,
                        },
                    }
                },
            ),
        )
    },
    "/v1/completions": {
        "post": _operation(
            "createCompletion",
            "Create a text completion",
            "prompt",
            {"prompt": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}},
            _result("text_completion", {"text": {"type": "string"}}),
        )
    },
}


def _dialect_operation(
    operation_id: str,
    summary: str,
    description: str,
    required: list[str],
    fields: dict[str, Any],
    result: dict[str, Any],
    error: dict[str, Any],
) -> dict[str, Any]:
    """Another API's wire format on the metered chat path (`cocoon_platform.dialects`)."""
    failure = {"content": {"application/json": {"schema": error}}}
    return {
        "tags": ["AI Inference"],
        "summary": summary,
        "description": description,
        "operationId": operation_id,
        "security": [{"bearerAuth": []}],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object", "required": required, "properties": fields}}},
        },
        "responses": {
            "200": {
                "description": "The answer (or, with `stream`, its typed server-sent events).",
                "headers": {"X-Request-Id": {"schema": {"type": "string"}}},
                "content": {"application/json": {"schema": result}, "text/event-stream": {}},
            },
            **{
                status: {"description": meaning, **failure}
                for status, meaning in (
                    ("400", "Invalid request"),
                    ("401", "Invalid or missing API key"),
                    ("402", "Insufficient balance"),
                    ("422", "Malformed request body"),
                    ("429", "Rate limited"),
                    ("502", "No workers for the model"),
                    ("503", "The COCOON network is unavailable"),
                    ("504", "The COCOON network timed out"),
                )
            },
        },
    }


ANTHROPIC_ERROR = {
    "type": "object",
    "properties": {
        "type": {"type": "string", "enum": ["error"]},
        "error": {
            "type": "object",
            "properties": {
                "type": {
                    "type": "string",
                    "enum": [
                        "invalid_request_error",
                        "authentication_error",
                        "billing_error",
                        "permission_error",
                        "not_found_error",
                        "request_too_large",
                        "rate_limit_error",
                        "api_error",
                        "timeout_error",
                        "overloaded_error",
                    ],
                },
                "message": {"type": "string"},
                "code": {"type": "string", "description": "The platform's own code."},
            },
        },
    },
}
COST_FIELDS = {
    "cost_nanoton": {"type": "integer", "description": "What this request cost, in nanoTON."},
    "cost_ton": {"type": "number", "description": "The same in TON."},
}
PATHS["/v1/responses"] = {
    "post": _dialect_operation(
        "createResponse",
        "Create a model response (OpenAI Responses API)",
        "The whole conversation goes in `input` on every request: the platform keeps none (`store` is "
        "false; `previous_response_id` is refused). Function tools only; `reasoning` items in the input are dropped.",
        ["model", "input"],
        {
            "model": {"type": "string"},
            "input": {
                "oneOf": [
                    {"type": "string"},
                    {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "description": "message (input_text/output_text parts), function_call, "
                            "function_call_output or reasoning",
                        },
                    },
                ]
            },
            "instructions": {"type": "string"},
            "max_output_tokens": {"type": "integer", "minimum": 1},
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "top_p": {"type": "number"},
            "tools": {"type": "array", "items": {"type": "object"}},
            "tool_choice": {},
            "parallel_tool_calls": {"type": "boolean"},
            "text": {"type": "object"},
            "reasoning": {"type": "object"},
            "stream": {"type": "boolean"},
            "store": {"type": "boolean"},
        },
        {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "object": {"type": "string", "enum": ["response"]},
                "status": {"type": "string"},
                "model": {"type": "string"},
                "output": {"type": "array"},
                "usage": {
                    "type": "object",
                    "properties": {
                        "input_tokens": {"type": "integer"},
                        "output_tokens": {"type": "integer"},
                        "input_tokens_details": {
                            "type": "object",
                            "properties": {"cached_tokens": {"type": "integer"}},
                        },
                        "output_tokens_details": {
                            "type": "object",
                            "properties": {"reasoning_tokens": {"type": "integer"}},
                        },
                        "total_tokens": {"type": "integer"},
                        **COST_FIELDS,
                    },
                },
            },
        },
        {"$ref": "#/components/schemas/Error"},
    )
}
PATHS["/v1/messages"] = {
    "post": _dialect_operation(
        "createMessage",
        "Create a message (Anthropic Messages API)",
        "Authenticate with `x-api-key` or `Authorization: Bearer`; `anthropic-version` and `anthropic-beta` "
        "are accepted and ignored, `cache_control` is stripped. Errors are in Anthropic's shape.",
        ["model", "messages", "max_tokens"],
        {
            "model": {"type": "string"},
            "messages": {"type": "array", "items": {"type": "object"}},
            "system": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]},
            "max_tokens": {"type": "integer", "minimum": 1},
            "stop_sequences": {"type": "array", "items": {"type": "string"}},
            "temperature": {"type": "number"},
            "top_p": {"type": "number"},
            "tools": {"type": "array", "items": {"type": "object"}},
            "tool_choice": {"type": "object"},
            "thinking": {"type": "object"},
            "stream": {"type": "boolean"},
        },
        {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "type": {"type": "string", "enum": ["message"]},
                "content": {"type": "array"},
                "stop_reason": {"type": "string"},
                "model": {"type": "string"},
                "usage": {
                    "type": "object",
                    "properties": {
                        "input_tokens": {"type": "integer"},
                        "cache_read_input_tokens": {"type": "integer"},
                        "output_tokens": {"type": "integer"},
                        **COST_FIELDS,
                    },
                },
            },
        },
        ANTHROPIC_ERROR,
    )
}


def _error_schema() -> dict[str, Any]:
    """ERROR with the seed's enums of types and codes, extended by every condition added since."""
    types, codes = published_error_enums()
    schema = copy.deepcopy(ERROR)
    fields = schema["properties"]["error"]["properties"]
    fields["type"]["enum"] = types
    fields["code"]["enum"] = [*codes, None]
    return schema


def add_inference_paths(api: FastAPI) -> None:
    """Extend the generated document with the inference paths and their shared schemas."""

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            schema = get_openapi(title=api.title, version=api.version, description=api.description, routes=api.routes)
            schema["paths"] = {**PATHS, **schema["paths"]}
            components = schema.setdefault("components", {})
            schemas = components.setdefault("schemas", {})
            schemas.update({"Error": _error_schema(), "Usage": USAGE})
            schemas.setdefault("HTTPValidationError", {"type": "object", "properties": {"detail": {"type": "array"}}})
            components["securitySchemes"] = {
                "bearerAuth": {"type": "http", "scheme": "bearer", "description": "API key with `ck_` prefix."}
            }
            api.openapi_schema = schema
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
