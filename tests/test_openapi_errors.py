"""The published document's error answers are made from the error classes (errors.openapi_responses):
every 4xx/5xx an operation lists has a body, and each example is an error the code can return."""

from __future__ import annotations

from cocoon_platform.app import create_api
from cocoon_platform.config import Settings
from cocoon_platform.errors import published_error_enums

ERROR_SCHEMA = {"$ref": "#/components/schemas/Error"}
# Other APIs' wire formats on the metered path: their failures are described by shape only.
DIALECT_PATHS = {"/v1/responses", "/v1/messages"}


def test_published_error_responses_come_from_the_error_classes() -> None:
    doc = create_api(Settings(_env_file=None)).openapi()  # type: ignore[call-arg]
    types, codes = published_error_enums()
    described = 0
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if not status.startswith(("4", "5")) or status == "422":
                    continue
                body = response.get("content", {}).get("application/json")
                assert body, f"{method.upper()} {path} {status}: no error body described"
                if path in DIALECT_PATHS or body.get("schema") != ERROR_SCHEMA:
                    continue
                for name, example in body["examples"].items():
                    error = example["value"]["error"]
                    assert error["type"] in types and error.get("code") in (*codes, None), (path, status, error)
                    assert name in (error.get("code"), error["type"])
                    assert response["description"], (path, status)
                    described += 1
    assert described >= 20
