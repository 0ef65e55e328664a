"""Typer + Rich front end."""
