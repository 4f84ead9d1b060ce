"""What AI agents read and call on their own: `/llms.txt` and the MCP server.

Everything here describes or uses the platform's public HTTP API and nothing else: `/llms.txt` is
generated per request from the app's published OpenAPI document, the live prices and the settings,
so it never drifts from what the platform does; the MCP tools are clients of the same HTTP API (a
user's own machine over stdio, or the platform's `/mcp` calling itself in-process), so every call
is authenticated, filtered and billed exactly like the same call made by any other client.
"""
