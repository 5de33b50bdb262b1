#!/usr/bin/env bash
# Builds the UniFFI cdylib and generates its Kotlin and Swift sources with uniffi-bindgen
# in library mode (the interface is read from the built library itself).
#
#   bash bindings-uniffi/generate.sh [OUT_DIR]      # default target/uniffi; PROFILE=release for a release build
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-debug}
OUT=${1:-target/uniffi}
if [ "$PROFILE" = release ]; then
    cargo build -q -p billing-engine-uniffi --release
else
    cargo build -q -p billing-engine-uniffi
fi
case "$(uname -s)" in
    Darwin) LIB=target/$PROFILE/libbilling_engine_ffi.dylib ;;
    *) LIB=target/$PROFILE/libbilling_engine_ffi.so ;;
esac
rm -rf "$OUT"
cargo run -q -p billing-engine-uniffi --bin uniffi-bindgen -- \
    generate --library "$LIB" --language kotlin --language swift --no-format --out-dir "$OUT"
echo "generated from $LIB:"
find "$OUT" -type f | sort
