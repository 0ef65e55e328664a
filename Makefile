# vmferry: `make demo` and `make test` do all the set-up on a fresh Debian 12 machine (as root).
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   := .venv
PYTHON ?= python3
STAMPS := .cache/stamps
APT_PACKAGES := qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients libvirt-dev \
	pkg-config busybox-static cpio iproute2 nftables gcc libc6-dev make libxml2-utils \
	postgresql virt-v2v libguestfs-tools nbdkit libnbd-bin debootstrap iperf3 \
	dosfstools mtools syslinux syslinux-common

.PHONY: help install apt venv guest lint unit test demo lab-down clean

help:
	@echo "make demo   install everything, start the lab, run the demo"
	@echo "make test   install everything, run lint and the whole test suite"
	@echo "make install | lint | unit | lab-down | clean"

install: apt venv guest

# Debian packages: installed only when one is missing, so a second run costs nothing.
apt: $(STAMPS)/apt
$(STAMPS)/apt: Makefile
	@mkdir -p $(STAMPS)
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@touch $@

venv: $(STAMPS)/venv
$(STAMPS)/venv: pyproject.toml $(STAMPS)/apt
	@mkdir -p $(STAMPS)
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	@touch $@

# The lab guest (kernel + busybox initramfs + guestd); cached, rebuilt only when its inputs change.
guest: $(STAMPS)/venv
	$(VENV)/bin/vmferry lab guest build

lint: $(STAMPS)/venv
	$(VENV)/bin/ruff check vmferry tests bench
	$(VENV)/bin/ruff format --check vmferry tests bench
	$(VENV)/bin/mypy

unit: $(STAMPS)/venv
	$(VENV)/bin/pytest -m "not lab" -q

test: install lint
	$(VENV)/bin/pytest -q

demo: install
	$(VENV)/bin/vmferry demo

lab-down: $(STAMPS)/venv
	$(VENV)/bin/vmferry lab down

clean:
	rm -rf $(VENV) .cache *.egg-info
