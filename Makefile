# `make demo` and `make test` create .venv on first use (pip, with this machine's local torch wheels);
# a second call skips the install. Override the torch pin for other machines:
#   make test TORCH="torch torchvision"      (and JOBS=8 for 8 pytest workers on a larger machine)
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.14.1 torchvision==0.29.1
BIN := $(VENV)/bin
STAMP := $(VENV)/.autolr-installed
export HF_HUB_OFFLINE ?= 1

.PHONY: demo test lint clean

# A strict editable install: a tree of links under build/ is a real sys.path entry, so `import autolr`
# works from a clone's parent folder too (the default mode's import hook ranks after the folder
# `./autolr`, an empty namespace package). Links are per file: adding or removing a module needs a
# reinstall, so the stamp depends on the list of package files, rewritten only when that list changes
# (editing a file needs nothing).
FILES := $(VENV)/.autolr-files
$(shell mkdir -p $(VENV) && find autolr adapters recipes \( -name '*.py' -o -name '*.toml' \) ! -path '*/__pycache__/*' \
	| LC_ALL=C sort > $(FILES).new && { cmp -s $(FILES).new $(FILES) || mv -f $(FILES).new $(FILES); }; rm -f $(FILES).new)

$(STAMP): pyproject.toml setup.py $(FILES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[dev,demo]" --config-settings editable_mode=strict
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/autolr run quickstart

# pytest's exit code 5 means no test ran: that is a failure too. JOBS pytest-xdist workers, each test
# file on one worker (its module fixtures, a trained run say, are built once): 2 for CI's 2 cores.
JOBS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(JOBS) --dist loadfile; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

# ruff, then the import rules: import-linter's contracts (pyproject.toml) on the package laid out as it
# installs, and no module importing another's private names (CONTRIBUTING.md, "The layers")
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python tests/_layers.py

clean:
	rm -rf $(VENV) runs .pytest_cache
