#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# What a new user does with an installed pact, as README.md "Installing"
# says it: install the build into a prefix (a temporary one, through
# DESTDIR), then build tests/consumer/consumer.c against the installed
# files only — through pkg-config and through CMake, each shared and
# static — and run every binary on both engines. Also checks the soname,
# the exported symbols against pact.h, that `man pact_recv` finds its page,
# that the documentation the header mentions is installed. Any failure
# fails the run.
#   tests/consumer.sh [BUILD_DIR]     (default build)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
src=$PWD/tests/consumer
work=$(mktemp -d /tmp/pact-consumer.XXXXXX)
trap 'rm -rf "$work"' EXIT
fail() { echo "consumer: FAIL: $*"; exit 1; }

meson install -C "$build" --destdir "$work/root" >"$work/install.log" 2>&1 ||
    { cat "$work/install.log"; fail "meson install"; }
build_prefix=$(meson introspect "$build" --buildoptions |
    python3 -c 'import json,sys; print({o["name"]: o["value"] for o in json.load(sys.stdin)}["prefix"])')
libdir=$(meson introspect "$build" --buildoptions |
    python3 -c 'import json,sys; print({o["name"]: o["value"] for o in json.load(sys.stdin)}["libdir"])')
prefix=$work/root$build_prefix
[ -f "$prefix/$libdir/pkgconfig/pact.pc" ] || fail "no $libdir/pkgconfig/pact.pc"
[ -f "$prefix/$libdir/cmake/pact/pactConfig.cmake" ] || fail "no $libdir/cmake/pact/pactConfig.cmake"
soversion=$(sed -n 's/^#define PACT_SOVERSION \([0-9]*\)/\1/p' "$prefix/include/pact_version.h")
readelf -d "$prefix/$libdir/libpact.so" | grep -q "Library soname: \[libpact.so.$soversion\]" ||
    fail "libpact.so's soname is not libpact.so.$soversion"

# The library exports exactly the functions pact.h declares (docs/abi.md,
# "Symbols"): none missing (a declaration without a definition, or a stub
# of the build without TLS falling behind), none extra.
nm -D --defined-only "$prefix/$libdir/libpact.so" | awk '$2 == "T" {print $3}' | sort >"$work/exported"
python3 tools/pact-header.py list "$prefix/include/pact.h" | sort >"$work/declared"
if ! diff -u "$work/declared" "$work/exported" >"$work/symbols.diff"; then
    cat "$work/symbols.diff"; fail "exported symbols differ from pact.h's functions (- declared only, + exported only)"
fi

# The installed header points only at what is installed.
# (pact.h's "docs/X" means <prefix>/share/doc/pact/X.)
for doc in guide.md contract.md abi.md $(grep -oh 'docs/[A-Za-z0-9_-]*\.[a-z]\+' "$prefix"/include/pact*.h | sed 's|docs/||'); do
    [ -f "$prefix/share/doc/pact/$doc" ] || fail "pact.h names docs/$doc, which is not installed"
done
if command -v man >/dev/null; then
    page=$(MANPATH="$prefix/share/man" man -w pact_recv) || fail "man pact_recv: no page"
    [[ "$page" == "$prefix"/* ]] || fail "man pact_recv found $page, not the installed page"
    MANPATH="$prefix/share/man" man -w 7 pact >/dev/null || fail "man 7 pact: no page"
fi

# pkg-config: the .pc file says prefix=$build_prefix; point it at DESTDIR.
export PKG_CONFIG_PATH="$prefix/$libdir/pkgconfig"
pc() { pkg-config --define-variable=prefix="$prefix" "$@" pact; }
cc=${CC:-cc}
# shared, found at run time through the rpath (README: or LD_LIBRARY_PATH)
$cc -o "$work/pc-shared" "$src/consumer.c" $(pc --cflags) $(pc --libs) \
    -Wl,-rpath,"$(pc --variable=libdir)" || fail "pkg-config shared build"
# static: libpact.a, and its dependencies from --static
$cc -o "$work/pc-static" "$src/consumer.c" $(pc --cflags) \
    -Wl,-Bstatic -lpact -Wl,-Bdynamic $(pc --static --libs | sed 's/-lpact\b//') \
    || fail "pkg-config static build"
if readelf -d "$work/pc-static" | grep -q 'libpact\.so'; then fail "pc-static needs libpact.so"; fi

# CMake: find_package(pact) from the prefix, shared and static.
if ! command -v cmake >/dev/null; then fail "cmake is not installed (make deps-test)"; fi
for kind in shared static; do
    static=OFF; [ $kind = static ] && static=ON
    cmake -S "$src" -B "$work/cmake-$kind" -DCMAKE_PREFIX_PATH="$prefix" \
        -DPACT_USE_STATIC_LIBS=$static >"$work/cmake-$kind.log" 2>&1 &&
        cmake --build "$work/cmake-$kind" >>"$work/cmake-$kind.log" 2>&1 ||
        { cat "$work/cmake-$kind.log"; fail "CMake $kind build"; }
    cp "$work/cmake-$kind/consumer" "$work/cmake-$kind-bin"
done
if readelf -d "$work/cmake-static-bin" | grep -q 'libpact\.so'; then fail "cmake-static needs libpact.so"; fi
# pactConfigVersion.cmake follows docs/abi.md: while the major version is 0,
# another minor version is incompatible; so is another major version.
version=$(sed -n 's/^#define PACT_VERSION_STRING "\(.*\)"/\1/p' "$prefix/include/pact_version.h")
IFS=. read -r major minor _ <<<"$version"
for want in "$major.$((minor + 1))" "$((major + 1)).0"; do
    if cmake -S "$src" -B "$work/cmake-want" -DCMAKE_PREFIX_PATH="$prefix" -DPACT_WANT="$want" \
        >"$work/cmake-want.log" 2>&1; then
        fail "find_package(pact $want) accepted pact $version"
    fi
    rm -rf "$work/cmake-want"
done
readelf -d "$work/cmake-shared-bin" | grep -q 'libpact\.so' || fail "cmake-shared does not use libpact.so"

for engine in uring epoll; do
    if [ $engine = uring ] && [ -x "$build/tests/engine-probe" ] && ! "$build/tests/engine-probe" uring >/dev/null 2>&1; then
        echo "consumer: io_uring unavailable, epoll only"; continue
    fi
    for bin in pc-shared pc-static cmake-shared-bin cmake-static-bin; do
        out=$(PACT_ENGINE=$engine "$work/$bin") || fail "$bin on $engine"
        echo "consumer: $bin on $engine: $out"
    done
done
# Without its rpath, the shared build finds the library through LD_LIBRARY_PATH.
$cc -o "$work/pc-norpath" "$src/consumer.c" $(pc --cflags) $(pc --libs)
if "$work/pc-norpath" >/dev/null 2>&1 && ! ldconfig -p | grep -q 'libpact\.so'; then
    fail "pc-norpath ran without LD_LIBRARY_PATH"
fi
LD_LIBRARY_PATH="$(pc --variable=libdir)" "$work/pc-norpath" >/dev/null || fail "LD_LIBRARY_PATH"
echo "consumer: ok (pkg-config and CMake, shared and static, prefix $build_prefix via DESTDIR)"
