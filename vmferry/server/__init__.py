"""The vmferry server: a REST API (FastAPI) over the service layer, with users, roles and an
audit trail (docs/server.md). Only :mod:`vmferry.cli.server_cmd` imports it, so the command
line's other commands never load FastAPI."""
