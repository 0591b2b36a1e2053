#!/bin/sh
# Builds the iemd RPM: release binaries linked against glibc 2.17 (so they run on CentOS/RHEL 7
# and everything newer), man pages and completions, then cargo generate-rpm.
# Usage: packaging/build-rpm.sh            -> target/generate-rpm/iemd-<version>-<release>.<arch>.rpm
#        RPM_RELEASE=2 packaging/build-rpm.sh   (another release of the same build, for upgrade tests)
#
# The binaries are cross-built with cargo-zigbuild: Zig links against the glibc 2.17 symbol
# versions whatever the build machine's glibc is. Tools, installed when missing:
#   cargo-zigbuild and Zig  pip install cargo-zigbuild ziglang   (PyPI wheels, nothing to compile)
#   cargo-generate-rpm      cargo install --locked cargo-generate-rpm
# Concurrent runs (tests) take turns on a lock; a second run finds everything built.
set -eu
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-gnu
glibc=2.17
release="${RPM_RELEASE:-1}"

mkdir -p target
exec 9>target/.build-rpm.lock
flock 9

if ! command -v cargo-zigbuild >/dev/null 2>&1 || ! python3 -m ziglang version >/dev/null 2>&1; then
    python3 -m pip install --quiet cargo-zigbuild ziglang >&2
fi
if ! command -v cargo-generate-rpm >/dev/null 2>&1; then
    cargo install --locked cargo-generate-rpm >&2
fi

cargo zigbuild --release --locked --target "$target.$glibc" --bin iemd --bin iemctl >&2
built="target/$target/release"

assets=target/assets
rm -rf "$assets"
mkdir -p "$assets/bin" "$assets/man" "$assets/completions"
# Stripped copies for the package; $built keeps its debug info for profiling.
for b in iemd iemctl; do
    cp "$built/$b" "$assets/bin/$b"
    if command -v strip >/dev/null 2>&1; then strip -s "$assets/bin/$b"; fi
done
"$assets/bin/iemctl" man "$assets/man" >/dev/null
"$assets/bin/iemd" --man-pages "$assets/man" >/dev/null
"$assets/bin/iemctl" completions bash > "$assets/completions/iemctl.bash"
"$assets/bin/iemctl" completions zsh > "$assets/completions/_iemctl"
"$assets/bin/iemctl" completions fish > "$assets/completions/iemctl.fish"

# Written aside and renamed into place: a test still reading the previous build's file keeps it.
out=target/generate-rpm
mkdir -p "$out"
tmp=$(mktemp -d target/generate-rpm.XXXXXX)
cargo generate-rpm --payload-compress gzip -s "release = \"$release\"" -o "$tmp/" >&2
for rpm in "$tmp"/*.rpm; do
    mv -f "$rpm" "$out/"
    echo "$out/${rpm##*/}"
done
rmdir "$tmp"
