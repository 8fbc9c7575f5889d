#!/bin/sh
# ctest deb_package: packages this build tree (packaging/build-deb.sh --build-dir) into OUTDIR,
# then runs lintian. Fails on any lintian error and on any warning that packaging/README.md does
# not justify (the list below); info tags are printed only.
#
#   check_package.sh BUILD_DIR OUTDIR
set -eu
build=$1
out=$2
root=$(cd "$(dirname "$0")/../.." && pwd)
rm -rf "$out"
mkdir -p "$out"
"$root/packaging/build-deb.sh" --build-dir "$build" "$out"
deb=$(ls "$out"/mltap_*.deb)
t0=$(date +%s)
lintian --pedantic --display-info "$deb" >"$out/lintian.txt" 2>&1 || true
echo "---- lintian ($(( $(date +%s) - t0 )) s) ----"
grep -v 'running with root privileges' "$out/lintian.txt" || true
# Justified in packaging/README.md ("lintian"): one package holds the agent and the SDK.
allowed='link-to-shared-library-in-wrong-package|package-name-doesnt-match-sonames'
errors=$(grep -c '^E: ' "$out/lintian.txt" || true)
unjustified=$(grep '^W: ' "$out/lintian.txt" | grep -Ev "^W: mltap: ($allowed) " || true)
if [ "$errors" -ne 0 ]; then
  echo "lintian: $errors error(s)" >&2
  exit 1
fi
if [ -n "$unjustified" ]; then
  echo "lintian warnings not justified in packaging/README.md:" >&2
  echo "$unjustified" >&2
  exit 1
fi
echo "lintian: no errors; warnings all justified"
