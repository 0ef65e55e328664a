"""Importing foreign VMs (VMware, Hyper-V, images) into libvirt: the pure decisions."""
