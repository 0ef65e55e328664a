"""The local multi-host lab: network namespaces, one libvirtd per host, a tiny guest."""
