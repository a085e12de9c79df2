#!/usr/bin/env bash
# Fails if a workspace crate declares a dependency its code never names.
#
# The compiler's `unused_crate_dependencies` lint judges each target alone
# (a binary, each integration test), so it flags dependencies that another
# target of the same crate uses. This check looks at the crate as a whole:
# a dependency counts as used if any of its sources (src, tests, examples,
# benches) names it as a path (`name::`), imports it (`use name`), or names
# it in an attribute string (`#[serde(with = "name")]`). A dependency kept
# for its features only is listed, with the reason, under
# `[package.metadata.cargo-machete] ignored` in its Cargo.toml (the key
# cargo-machete reads, so either tool can run).
set -euo pipefail
cd "$(dirname "$0")/.."

members=$(sed -n 's/^members = \[\(.*\)\]/\1/p' Cargo.toml | tr -d '"' | tr ',' ' ')
[ -n "$members" ] || { echo "unused-deps: no workspace members found in Cargo.toml" >&2; exit 1; }
status=0
for crate in $members; do
    manifest="$crate/Cargo.toml"
    [ -f "$manifest" ] || { echo "unused-deps: $manifest missing" >&2; exit 1; }
    ignored=$(awk '/^\[package.metadata.cargo-machete\]/{m=1;next} /^\[/{m=0} m && /^ignored/' "$manifest" | grep -o '"[^"]*"' | tr -d '"' || true)
    deps=$(awk '/^\[(dev-|build-)?dependencies\]/{d=1;next} /^\[/{d=0} d && /^[A-Za-z0-9_-]+ *=/{print $1}' "$manifest" | sort -u)
    sources=$(find "$crate" -name '*.rs' -not -path '*/target/*')
    for dep in $deps; do
        if grep -qxF "$dep" <<<"$ignored"; then continue; fi
        ident=${dep//-/_}
        if ! grep -qE "(^|[^A-Za-z0-9_])${ident}::|use ${ident}( |;|::)|extern crate ${ident}|\"${ident}\"" $sources; then
            echo "unused-deps: $crate depends on $dep, which none of its sources names" >&2
            status=1
        fi
    done
done
[ $status -eq 0 ] && echo "unused-deps: every dependency is used"
exit $status
