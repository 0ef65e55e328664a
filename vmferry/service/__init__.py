"""One function per user action; the CLI and the API call these and nothing below them."""
