#!/bin/sh
# Builds a container image FROM scratch for one Ovid system binary (the one `ovidc build`
# compiles, e.g. target/debug/web_kvs), with no registry: the binary goes in as /system and,
# if it is linked dynamically, every shared library `ldd` lists goes in at its own path (the
# dynamic loader included). A static binary (RUSTFLAGS="-C target-feature=+crt-static" with an
# explicit --target) goes in alone.
#
#     tests/docker/image.sh target/debug/web_kvs ovid-webkvs:dev
#
# The binary must not need DNS or other NSS lookups: give boxes IP addresses.
set -eu
if [ $# -ne 2 ]; then
    echo "usage: $0 BINARY TAG" >&2
    exit 2
fi
bin=$1
tag=$2
here=$(cd "$(dirname "$0")" && pwd)
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/rootfs"
cp "$bin" "$context/rootfs/system"
# `ldd` fails on a static binary: then there is nothing to add.
if libs=$(ldd "$bin" 2>/dev/null); then
    for lib in $(printf '%s\n' "$libs" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }'); do
        mkdir -p "$context/rootfs$(dirname "$lib")"
        cp -L "$lib" "$context/rootfs$lib"
    done
fi
cp "$here/Dockerfile" "$context/Dockerfile"
docker build --quiet --tag "$tag" "$context"
