# One-command set-up. Everything installs itself on a fresh Debian machine.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch: a pinned local CPU wheel where one exists (DEVELOPERS.md); users may have any torch >= 2.1.
TORCH_SPEC ?= torch==2.13.0
APT_PKGS := xvfb xauth libgl1 libegl1 libopengl0 libglx-mesa0 libgl1-mesa-dri libxkbcommon-x11-0 \
	libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-randr0 libxcb-render-util0 libxcb-shape0 \
	libxcb-xfixes0 libxcb-xinerama0 libxcb-xkb1 libxcb-cursor0 libfontconfig1 libdbus-1-3

.PHONY: install install-test demo test bench accept sysdeps clean docs

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

install: $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[all]"

install-test: $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[all,testing]"

# Debian packages headless Qt/OpenGL needs (Xvfb; offscreen Qt does not render napari).
sysdeps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

demo: install sysdeps
	@if [ -n "$$DISPLAY" ]; then $(VENV)/bin/napari-4dstem demo; else xvfb-run -a $(VENV)/bin/napari-4dstem demo; fi

test: install-test sysdeps
	$(PY) -m pytest

bench: install-test sysdeps
	@if [ -n "$$DISPLAY" ]; then $(PY) benchmarks/run_all.py $(BENCH_ARGS); else xvfb-run -a $(PY) benchmarks/run_all.py $(BENCH_ARGS); fi

# The rrVAE acceptance check of issue 4: abTEM graphene with a vacancy and a Si dopant (simulated once into
# benchmarks/.data with abTEM installed into benchmarks/.envs/abtem), clean and noisy, through the CLI's fast mode.
accept: install-test
	$(PY) benchmarks/acceptance_rrvae.py $(ACCEPT_ARGS)

docs: install-test sysdeps
	xvfb-run -a $(PY) docs/make_screenshots.py

clean:
	rm -rf $(VENV) build dist .pytest_cache
