# SPDX-License-Identifier: MIT
# A thin front for meson: `make demo` and `make test` each do everything on a
# fresh Debian 12 machine (install what is missing, configure, build, run).
# Build trees: build/ (debug-optimized), build-asan/ (ASan+UBSan),
# build-tsan/ (ThreadSanitizer, for the cross-thread tests).

# What each job needs: the demo only a compiler, meson and liburing; the
# tests (make test, what CI runs) Criterion, OpenSSL, the sanitizer and
# fuzzing compiler, Python's headers and test suite, the real Python
# libraries pact.asyncio is tested with (aiohttp, websockets, httpx through
# anyio, pytest-asyncio), CMake (the installed consumer check) and the tools
# some tests call; the benchmarks libuv, matplotlib and wrk (the HTTP load
# generator), and for pact.asyncio's part uvloop and aiohttp, with perf and
# valgrind for its counts per request (bench/python_counts.sh). The Windows
# suites (make test-windows) cross-build with
# mingw-w64 and run under wine64.
DEMO_PACKAGES := gcc meson ninja-build pkg-config liburing-dev
TEST_PACKAGES := $(DEMO_PACKAGES) clang libcriterion-dev libssl-dev openssl \
	strace valgrind iproute2 procps util-linux cmake man-db \
	python3-dev libpython3.11-testsuite \
	python3-aiohttp python3-websockets python3-httpx python3-anyio \
	python3-pytest python3-pytest-asyncio \
	gcc-mingw-w64-x86-64 wine64
BENCH_PACKAGES := $(DEMO_PACKAGES) libuv1-dev python3-matplotlib wrk \
	python3-dev python3-uvloop python3-aiohttp linux-perf valgrind
DEBIAN_PACKAGES := $(sort $(TEST_PACKAGES) $(BENCH_PACKAGES))
MESON ?= meson
# The test trees build everything the tests need, or fail loudly.
TEST_OPTIONS := -Dtests=enabled -Dtls=enabled -Dexamples=true

.PHONY: all deps deps-demo deps-test deps-bench build demo test test-quick test-python test-python-asan test-windows bench torture soak fuzz valgrind clean install

all: build

# Installs the missing Debian packages of a set; needs root (CI and the dev
# machines are root). deps = everything (tests and benchmarks).
install_missing = @missing=""; for p in $(1); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

deps:
	$(call install_missing,$(DEBIAN_PACKAGES))
deps-demo:
	$(call install_missing,$(DEMO_PACKAGES))
deps-test:
	$(call install_missing,$(TEST_PACKAGES))
deps-bench:
	$(call install_missing,$(BENCH_PACKAGES))

build/build.ninja:
	$(MESON) setup build --buildtype=debugoptimized

build-asan/build.ninja:
	CC=gcc $(MESON) setup build-asan --buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false $(TEST_OPTIONS) -Dpython=enabled

build-tsan/build.ninja:
	CC=clang $(MESON) setup build-tsan --buildtype=debug -Db_sanitize=thread -Db_lundef=false $(TEST_OPTIONS)

# libFuzzer harnesses (tests/fuzz/): clang, ASan, coverage in the library.
build-fuzz/build.ninja:
	CC=clang $(MESON) setup build-fuzz --buildtype=debugoptimized -Db_sanitize=address \
		-Db_lundef=false -Dtests=disabled -Dexamples=false -Dfuzz=true -Dc_args=-fsanitize=fuzzer-no-link

build: deps build/build.ninja
	ninja -C build

# The operation-level demo (echo over raw ops), then the transport demo
# (examples/echo-server + echo-client), each on io_uring and on epoll.
# Installs and builds only what these need (the library and three programs).
DEMO_TARGETS := examples/demo examples/echo-server examples/echo-client
demo: deps-demo build/build.ninja
	ninja -C build $(DEMO_TARGETS)
	./build/examples/demo
	./examples/stream-demo.sh build

# build/ may have been configured by `make demo` before Criterion and
# OpenSSL were installed: configure it for the tests. (build-fuzz trees made
# when -Dtests was a boolean read it as auto now: keep them lean.)
test: deps-test build/build.ninja build-asan/build.ninja build-tsan/build.ninja build-fuzz/build.ninja
	$(MESON) configure build $(TEST_OPTIONS)
	$(MESON) configure build-asan -Dpython=enabled
	ninja -C build
	ninja -C build-asan
	ninja -C build-tsan
	$(MESON) configure build-fuzz -Dtests=disabled -Dexamples=false
	ninja -C build-fuzz
	./tests/run-all.sh
	$(MESON) test -C build --suite docs
	./tests/consumer.sh build
	./python/tests/run.sh build
	CPYTHON_WITHOUT="$(PYTHON_ASAN_CI_WITHOUT)" ./python/tests/run.sh build-asan
	./tests/run-windows.sh

# Windows: pact cross-built with mingw-w64 (cross/mingw-w64.ini) into
# build-win/, its suites (tests/win/) run under wine64 in a throwaway
# prefix in build-win/wineprefix.
test-windows: deps-test
	./tests/run-windows.sh

# pact.asyncio (python/): its own tests and CPython's asyncio suites with
# pact as the loop, on both engines. The package is built into
# build/python: PYTHONPATH=build/python /usr/bin/python3 -c 'import pact.asyncio'
test-python: build
	./python/tests/run.sh build

# pact.asyncio built with ASan and UBSan (build-asan), run under them and
# LeakSanitizer (python/tests/run.sh says how): its own tests and every
# CPython suite, both engines (about 10 minutes per engine on a loaded
# machine). make test runs its own tests and the CPython suites but those
# of PYTHON_ASAN_CI_WITHOUT: test_tasks (913 tests of the task machinery,
# asyncio's Python code; 1.5-3 minutes there) and test_ssl (OpenSSL
# through asyncio's sslproto, 1-1.5 minutes; start_tls and ssl= are also
# in test_sslproto, test_events and test_streams).
PYTHON_ASAN_CI_WITHOUT := test_tasks test_ssl
test-python-asan: deps-test build-asan/build.ninja
	$(MESON) configure build-asan -Dpython=enabled
	ninja -C build-asan
	./python/tests/run.sh build-asan

# pact.asyncio leak run (python/tests/leak_run.py) on both engines: 10^6
# requests through a protocol server, LEAK_TLS_REQUESTS over TLS and
# LEAK_AIOHTTP_REQUESTS through aiohttp's server and client, in rounds of
# 400 requests on 8 connections; RSS, the fd count, the transports alive
# and pact's operations in flight are sampled at every tenth: the fd count
# and the operations must not change, no transport may be alive and RSS
# grow by at most LEAK_RSS_GROWTH_KIB. make test runs a short version
# (test_leaks.py).
# Logs: build/leak-<server>-<engine>.log.
LEAK_REQUESTS ?= 1000000
LEAK_TLS_REQUESTS ?= 100000
LEAK_AIOHTTP_REQUESTS ?= 100000
LEAK_RSS_GROWTH_KIB ?= 1024
leak-python: build
	@fail=0; for e in uring epoll; do \
		if [ $$e = uring ] && ! ./build/tests/engine-probe uring >/dev/null 2>&1; then \
			echo "SKIP uring: $$(./build/tests/engine-probe uring 2>&1)"; continue; fi; \
		for run in "protocol $(LEAK_REQUESTS)" "tls $(LEAK_TLS_REQUESTS)" \
				"aiohttp $(LEAK_AIOHTTP_REQUESTS)"; do \
			set -- $$run; log=build/leak-$$1-$$e.log; \
			PYTHONPATH=build/python nice /usr/bin/python3 python/tests/leak_run.py \
				--server $$1 --requests $$2 --engine $$e \
				--rss-growth-kib $(LEAK_RSS_GROWTH_KIB) > $$log 2>&1 || fail=1; \
			grep -E "^(result|Traceback)" $$log || { tail -20 $$log; fail=1; }; \
		done; \
	done; [ $$fail = 0 ]

# Only the plain build, both engines: for quick iterations.
test-quick: build
	BUILDS=build ./tests/run-all.sh

bench: deps-bench
	./bench/run.sh

# Cancel torture: 10^7 random operations per engine (tests/torture.c),
# both engines at once (one per core). A failure prints the seed to replay:
#   PACT_ENGINE=epoll ./build/tests/torture --seed N --ops M
TORTURE_OPS ?= 10000000
TORTURE_SEEDS ?= 50
torture: build
	@seed=$$(date +%s); per=$$(( $(TORTURE_OPS) / $(TORTURE_SEEDS) )); \
	PACT_ENGINE=uring ./build/tests/torture --seed $$seed --seeds $(TORTURE_SEEDS) --ops $$per & u=$$!; \
	PACT_ENGINE=epoll ./build/tests/torture --seed $$seed --seeds $(TORTURE_SEEDS) --ops $$per & e=$$!; \
	wait $$u; ru=$$?; wait $$e; re=$$?; [ $$ru = 0 ] && [ $$re = 0 ]

# Soak: an echo server under load with connections, subprocesses and timers
# churned and an EMFILE storm halfway, on both engines at once; fd count
# and RSS are printed every 5 s and must stay flat (tests/soak.c).
SOAK_SECONDS ?= 600
soak: build
	@PACT_ENGINE=uring SOAK_SECONDS=$(SOAK_SECONDS) ./build/tests/soak > build/soak-uring.log 2>&1 & u=$$!; \
	PACT_ENGINE=epoll SOAK_SECONDS=$(SOAK_SECONDS) ./build/tests/soak > build/soak-epoll.log 2>&1 & e=$$!; \
	wait $$u; ru=$$?; wait $$e; re=$$?; \
	for f in build/soak-uring.log build/soak-epoll.log; do echo "== $$f"; grep -E "engine|storm|drift|done|ok|FAIL" $$f; done; \
	[ $$ru = 0 ] && [ $$re = 0 ]

# Fuzzing: each harness on both engines for FUZZ_SECONDS (default 300),
# starting from the corpus in tests/fuzz/corpus/ (new inputs go to
# build-fuzz/corpus/; copy the good ones back). A crash leaves
# build-fuzz/crash-* to replay: ./build-fuzz/tests/fuzz/fuzz_stream FILE
FUZZ_SECONDS ?= 300
fuzz: deps build-fuzz/build.ninja
	ninja -C build-fuzz
	@for h in stream tls; do for e in uring epoll; do \
		mkdir -p build-fuzz/corpus/$$h; echo "== fuzz_$$h on $$e, $(FUZZ_SECONDS) s"; \
		(cd build-fuzz && PACT_ENGINE=$$e ./tests/fuzz/fuzz_$$h -max_total_time=$(FUZZ_SECONDS) \
			-max_len=2048 -print_final_stats=1 corpus/$$h ../tests/fuzz/corpus/$$h 2>&1 | \
			grep -E "stat::number_of_executed_units|DONE|ERROR|fuzz_" ) || exit 1; \
	done; done

# The suite on the epoll engine under valgrind's memcheck (plain build),
# Criterion's forked test processes included. valgrind does not see
# io_uring's kernel writes into user memory (it would report reads of
# received data as uninitialised), so only the epoll engine is checked.
# Exit code 99 = memcheck found an error; logs in build/valgrind-*.log.
valgrind: build
	@fail=0; for bin in build/tests/test_*; do \
		[ -f "$$bin" ] && [ -x "$$bin" ] || continue; n=$$(basename $$bin); \
		PACT_ENGINE=epoll valgrind -q --error-exitcode=99 --trace-children=yes \
			--leak-check=full --errors-for-leak-kinds=definite \
			$$bin --jobs 2 > build/valgrind-$$n.log 2>&1; rc=$$?; \
		printf '%-22s %s\n' $$n "$$(grep -a Synthesis build/valgrind-$$n.log | tail -1 | sed 's/.*Synthesis: //') rc $$rc"; \
		[ $$rc = 0 ] || fail=1; \
	done; [ $$fail = 0 ]

# Installs into meson's prefix (/usr/local unless configured otherwise:
# meson setup build --prefix=$$HOME/.local). README.md, "Installing".
install: build
	$(MESON) install -C build

clean:
	rm -rf build build-asan build-tsan build-win
