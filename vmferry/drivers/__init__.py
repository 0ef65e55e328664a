"""Side effects: libvirt, external tools and processes. Nothing above this layer shells out."""

import os

# libvirt's client library writes its own log lines to stderr (a failed certificate check
# prints a timestamped warning before the error vmferry reports). vmferry reports libvirt's
# errors itself, in one line, so libvirt's log goes nowhere unless the user sets
# LIBVIRT_LOG_OUTPUTS (e.g. "1:stderr" for everything). libvirt reads it when first imported.
os.environ.setdefault("LIBVIRT_LOG_OUTPUTS", "1:file:/dev/null")
