"""Rehearsals (`vmferry rehearse`): a throw-away copy of a VM booted on the destination in an
isolated network, timed and checked, then removed; the pure parts live here."""
