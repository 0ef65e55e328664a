"""vmferry: move virtual machines into and between KVM hosts."""

__version__ = "0.1.0"
