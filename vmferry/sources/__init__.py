"""Import sources: VMX, OVF, OVA and bare disk images, each read into one ``SourceVm``.

``open_source`` picks the parser and checks every disk's headers (``inspect_image``) before
it returns, so the caller can hand each disk to ``qemu-img convert``. Untrusted input is
validated before anything is done with it; a refusal is a one-line ``BadInputError``.
"""

from vmferry.sources.bare import ImageOverrides
from vmferry.sources.image import ImageFacts, inspect_image
from vmferry.sources.limits import DEFAULT_LIMITS, Limits
from vmferry.sources.opener import open_source

__all__ = [
    "DEFAULT_LIMITS",
    "ImageFacts",
    "ImageOverrides",
    "Limits",
    "inspect_image",
    "open_source",
]
