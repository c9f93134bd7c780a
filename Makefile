# Kit packaging. `make install-kit` builds small static release binaries and installs
# aegis-agent, aegis-gateway and aegis-kit into $(PREFIX)/bin and the kit manifest into
# ~/.aegis/kits/agent.json. Repeating it is harmless; `make uninstall-kit` reverses it.
PREFIX ?= $(HOME)/.local

.PHONY: install-kit uninstall-kit release test bench

release:
	@scripts/release.sh

install-kit:
	@dir=$$(scripts/release.sh) && "$$dir/aegis-kit" install --prefix "$(PREFIX)"

uninstall-kit:
	@if [ -x "$(PREFIX)/bin/aegis-kit" ]; then "$(PREFIX)/bin/aegis-kit" uninstall --prefix "$(PREFIX)"; \
	else cargo run -q --release -p aegis-kit -- uninstall --prefix "$(PREFIX)"; fi

test:
	@scripts/test.sh

bench:
	cargo bench -p tether --features schedule
	cargo bench -p aegis-e2e
