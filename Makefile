# vmferry: `make demo` and `make test` do all the set-up on a fresh Debian 12 machine (as root).
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   := .venv
PYTHON ?= python3
STAMPS := .cache/stamps
# The virtualization stack: modern (QEMU 10 + libvirt 11 from bookworm-backports) or stock
# (Debian 12's QEMU 7.2 + libvirt 9.0). scripts/install-packages.sh installs it.
VMFERRY_STACK ?= modern
APT_PACKAGES := pkg-config busybox-static cpio iproute2 nftables gcc libc6-dev make libxml2-utils \
	postgresql virt-v2v libguestfs-tools nbdkit libnbd-bin debootstrap iperf3 \
	dosfstools mtools syslinux syslinux-common iputils-ping qemu-guest-agent tcpdump \
	chromium golang-go golang-github-vmware-govmomi-dev ipmitool tini

.PHONY: help install apt venv guest vcsim lint unit test demo lab-down clean console-shots

help:
	@echo "make demo   install everything, start the lab, run the demo, then serve the web console"
	@echo "make test   install everything, run lint and the whole test suite"
	@echo "make install | lint | unit | lab-down | clean | console-shots"
	@echo "VMFERRY_STACK=stock make ...   Debian 12's QEMU 7.2 + libvirt 9.0 instead of QEMU 10 + libvirt 11"

install: apt venv guest vcsim

# Debian packages: apt runs only when one is missing or the stack changed (one stamp a stack).
apt: $(STAMPS)/apt-$(VMFERRY_STACK)
$(STAMPS)/apt-$(VMFERRY_STACK): Makefile scripts/install-packages.sh
	@mkdir -p $(STAMPS)
	@rm -f $(STAMPS)/apt-*
	scripts/install-packages.sh $(VMFERRY_STACK) $(APT_PACKAGES)
	@touch $@

# libvirt-python is pinned to the installed libvirt's version: it is built against its headers
# (pip caches the wheel per version, so a stack switch never reuses the other stack's build).
venv: $(STAMPS)/venv
$(STAMPS)/venv: pyproject.toml $(STAMPS)/apt-$(VMFERRY_STACK)
	@mkdir -p $(STAMPS)
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]' \
		"libvirt-python==$$(dpkg-query -W -f='$${Version}' libvirt-dev | cut -d- -f1)"
	@touch $@

# The lab guest (kernel + busybox initramfs + guestd); cached, rebuilt only when its inputs change.
guest: $(STAMPS)/venv
	$(VENV)/bin/vmferry lab guest build

# The vSphere simulator the vSphere tests talk to (tests/support/vcsim): govmomi's simulator
# package from Debian, built offline; rebuilt only when its main.go changes (apt is only
# needed first, so a new Makefile does not rebuild it).
VCSIM := .cache/vcsim/vcsim
vcsim: $(VCSIM)
$(VCSIM): tests/support/vcsim/main.go | $(STAMPS)/apt-$(VMFERRY_STACK)
	@mkdir -p $(@D)/gopath
	GO111MODULE=off GOPATH=$(CURDIR)/$(@D)/gopath:/usr/share/gocode GOCACHE=$(CURDIR)/$(@D)/go-build \
		go build -o $@ ./tests/support/vcsim/main.go

lint: $(STAMPS)/venv
	$(VENV)/bin/ruff check vmferry tests bench
	$(VENV)/bin/ruff format --check vmferry tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

unit: $(STAMPS)/venv $(VCSIM)
	$(VENV)/bin/pytest -m "not lab" -q -n 2 --dist loadfile

# The lab tests one after the other (their namespaces are machine-wide), then the rest on
# two workers (a test module stays on one worker, in its order); both run, either failing fails.
test: install lint
	@$(VENV)/bin/pytest -q -m lab --durations=25; lab=$$?; \
	$(VENV)/bin/pytest -q -m "not lab" -n 2 --dist loadfile --durations=10; rest=$$?; \
	test $$lab -eq 0 -a $$rest -eq 0

demo: install
	$(VENV)/bin/vmferry demo --console

# docs/console/*.png: the console's pages as the browser tests see them (docs/console.md).
console-shots: $(STAMPS)/venv
	VMFERRY_CONSOLE_SHOTS=1 $(VENV)/bin/pytest -q -p no:cacheprovider tests/browser

lab-down: $(STAMPS)/venv
	$(VENV)/bin/vmferry lab down

clean:
	rm -rf $(VENV) .cache *.egg-info
