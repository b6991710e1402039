# uffdshim top-level Makefile: everything is built into build/.
#   make         build the shim, the model library, tools, demos, tests, benchmarks
#   make check   run every test through prove (TAP)
#   make demo    run the demo programs under uffd-record (the main job)
#   make bench   run the benchmarks (native and shimmed side by side)

CC      ?= gcc
B       := build
WARN    := -Wall -Wextra -Werror -Wno-unused-parameter
CFLAGS  ?= -O2 -g
ALL_CFLAGS := -std=gnu11 $(WARN) $(CFLAGS) -D_GNU_SOURCE -Iinclude -Imodel -MMD -MP
GLIB_CFLAGS := $(shell pkg-config --cflags glib-2.0 2>/dev/null)
GLIB_LIBS   := $(shell pkg-config --libs glib-2.0 2>/dev/null)

MODEL_SRC := $(wildcard model/*.c)
SHIM_SRC  := $(wildcard shim/*.c)
REC_SRC   := $(wildcard recorder/*.c)
REP_SRC   := $(wildcard replayer/*.c)
TOOLLIB_SRC := $(wildcard tools/common/*.c)
CRIU_SRC  := $(wildcard criu/*.c)
DEMO_SRC  := $(wildcard demo/*.c)
TEST_SRC  := $(wildcard tests/*.c)
BENCH_SRC := $(wildcard bench/*.c)

MODEL_OBJ := $(MODEL_SRC:%.c=$(B)/obj/%.o)
SHIM_OBJ  := $(SHIM_SRC:%.c=$(B)/obj/%.o)
REC_OBJ   := $(REC_SRC:%.c=$(B)/obj/%.o)
REP_OBJ   := $(REP_SRC:%.c=$(B)/obj/%.o)
TOOLLIB_OBJ := $(TOOLLIB_SRC:%.c=$(B)/obj/%.o)
CRIU_OBJ  := $(CRIU_SRC:%.c=$(B)/obj/%.o)

DEMOS   := $(DEMO_SRC:demo/%.c=$(B)/demo/%)
TESTS_C := $(TEST_SRC:tests/%.c=$(B)/tests/%)
BENCHES := $(BENCH_SRC:bench/%.c=$(B)/bench/%)

LIBMODEL := $(B)/libuffdmodel.a
LIBSHIM  := $(B)/libuffdshim.so
RECORD   := $(B)/uffd-record
REPLAY   := $(B)/uffd-replay
# The CRIU plugin lives alone in its directory: CRIU loads every .so of --libdir.
CRIU_PLUGIN := $(B)/criu/uffdshim_criu.so

# uffd-replay exists once replayer/ has sources.
TOOLS := $(RECORD) $(if $(REP_SRC),$(REPLAY))

all: $(LIBMODEL) $(LIBSHIM) $(TOOLS) $(if $(CRIU_SRC),$(CRIU_PLUGIN)) $(DEMOS) $(TESTS_C) $(BENCHES)

# Everything is position independent: the model links into the shim too.
$(B)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -fPIC $(if $(filter recorder/% replayer/% tools/% criu/%,$<),$(GLIB_CFLAGS) -Itools/common -Irecorder) -c $< -o $@

$(LIBMODEL): $(MODEL_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

# The shim links only libc and libdl.
$(LIBSHIM): $(SHIM_OBJ) $(MODEL_OBJ)
	$(CC) -shared -Wl,-z,defs -Wl,--version-script=shim/exports.map -o $@ $^ -ldl -lpthread

CRIU_PLUGIN_OBJ := $(CRIU_OBJ) $(B)/obj/recorder/ctl_client.o $(B)/obj/recorder/procfs.o \
	$(B)/obj/recorder/verify.o $(MODEL_OBJ)
# -Bsymbolic: the plugin's calls bind to its own copies, never to criu's symbols.
$(CRIU_PLUGIN): $(CRIU_PLUGIN_OBJ)
	@mkdir -p $(dir $@)
	$(CC) -shared -Wl,-Bsymbolic -Wl,-z,defs -o $@ $(CRIU_PLUGIN_OBJ) -ldl

$(RECORD): $(REC_OBJ) $(TOOLLIB_OBJ) $(LIBMODEL)
	$(CC) -o $@ $(REC_OBJ) $(TOOLLIB_OBJ) $(LIBMODEL) $(GLIB_LIBS) -lm

$(REPLAY): $(REP_OBJ) $(TOOLLIB_OBJ) $(LIBMODEL)
	$(CC) -o $@ $(REP_OBJ) $(TOOLLIB_OBJ) $(LIBMODEL) $(GLIB_LIBS)

$(B)/demo/%: demo/%.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< -lpthread

$(B)/tests/%: tests/%.c $(wildcard tests/*.h) $(LIBMODEL)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests -o $@ $< $(LIBMODEL) -lpthread

# Tests of the tools' common code (tools/common) link it, and glib.
TOOLLIB_TESTS := $(B)/tests/chain_format_test
$(TOOLLIB_TESTS): $(B)/tests/%: tests/%.c $(wildcard tests/*.h) $(TOOLLIB_OBJ) $(LIBMODEL)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(GLIB_CFLAGS) -Itests -Itools/common -o $@ $< $(TOOLLIB_OBJ) \
	  $(LIBMODEL) $(GLIB_LIBS) -lpthread

$(B)/bench/%: bench/%.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< -lpthread -lm

TEST_SCRIPTS := $(filter-out tests/tap-exec.sh tests/criu_lib.sh,$(wildcard tests/*.sh))
# TESTS=... runs a subset: make check TESTS="build/tests/model_ops_test"
TESTS ?= $(TESTS_C) $(TEST_SCRIPTS)

check: all
	UFFDSHIM_BUILD=$(abspath $(B)) UFFDSHIM_SRC=$(abspath .) \
	  prove --exec $(abspath tests/tap-exec.sh) --timer $(TESTS)

demo: all
	UFFDSHIM_BUILD=$(abspath $(B)) sh demo/run-demos.sh

bench: all
	UFFDSHIM_BUILD=$(abspath $(B)) sh bench/run-benches.sh

clean:
	rm -rf $(B)

.PHONY: all check demo bench clean
-include $(shell find $(B)/obj -name '*.d' 2>/dev/null)
