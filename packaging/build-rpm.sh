#!/bin/sh
# Builds the iemd RPM: release binaries, man pages and completions, then cargo generate-rpm.
# Usage: packaging/build-rpm.sh            -> target/generate-rpm/iemd-<version>-1.<arch>.rpm
set -eu
cd "$(dirname "$0")/.."

cargo build --release --locked --bin iemd --bin iemctl

assets=target/assets
rm -rf "$assets"
mkdir -p "$assets/bin" "$assets/man" "$assets/completions"
# Stripped copies for the package; target/release keeps its debug info for profiling.
for b in iemd iemctl; do
    cp "target/release/$b" "$assets/bin/$b"
    if command -v strip >/dev/null 2>&1; then strip -s "$assets/bin/$b"; fi
done
"$assets/bin/iemctl" man "$assets/man" >/dev/null
"$assets/bin/iemd" --man-pages "$assets/man" >/dev/null
"$assets/bin/iemctl" completions bash > "$assets/completions/iemctl.bash"
"$assets/bin/iemctl" completions zsh > "$assets/completions/_iemctl"
"$assets/bin/iemctl" completions fish > "$assets/completions/iemctl.fish"

if ! command -v cargo-generate-rpm >/dev/null 2>&1; then
    cargo install --locked cargo-generate-rpm
fi
mkdir -p target/generate-rpm
cargo generate-rpm --payload-compress gzip -o target/generate-rpm/
ls -1 target/generate-rpm/*.rpm
