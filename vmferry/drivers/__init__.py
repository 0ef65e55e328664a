"""Side effects: libvirt, external tools and processes. Nothing above this layer shells out."""
