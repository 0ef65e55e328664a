"""The command line's remote mode: with VMFERRY_URL and VMFERRY_TOKEN set, commands ask a
vmferry server (:mod:`vmferry.client.api`, on httpx) instead of the local service and store.

:mod:`vmferry.client.remote` (which commands have a remote form) imports nothing heavy, so
every command may import it; :mod:`vmferry.client.api` is imported only in remote mode.
"""
