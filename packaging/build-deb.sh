#!/bin/sh
# Builds the Debian package of mltap: OUTDIR/mltap_<version>_<arch>.deb. Run as root on Debian 12.
#
#   packaging/build-deb.sh OUTDIR                    configure and build build-deb/ (RelWithDebInfo,
#                                                    prefix /usr), then package; binaries stripped
#   packaging/build-deb.sh --build-dir DIR OUTDIR    package an already configured build tree
#                                                    (prefix /usr): what the ctest suite does, so
#                                                    that CI does not compile everything twice
#
# CPack DEB from the install() rules in packaging/install.cmake; Depends from dpkg-shlibdeps.
# Then the package's file list is checked against what it must contain (packaging/README.md).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=""
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) build=$2; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    -*) echo "build-deb.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -eq 1 ] || { echo "usage: packaging/build-deb.sh [--build-dir DIR] OUTDIR" >&2; exit 2; }
mkdir -p "$1"
outdir=$(cd "$1" && pwd)
jobs=${MLTAP_JOBS:-$(nproc)}
t0=$(date +%s)

"$root/packaging/install-deps.sh"

if [ -z "$build" ]; then
  build="$root/build-deb"
  launcher=""
  if command -v ccache >/dev/null 2>&1; then
    launcher="-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache"
  fi
  # shellcheck disable=SC2086
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=/usr \
    -DMLTAP_BUILD_BENCH=OFF -DCMAKE_SKIP_INSTALL_ALL_DEPENDENCY=ON $launcher >/dev/null
fi
build=$(cd "$build" && pwd)
cache="$build/CMakeCache.txt"
[ -f "$cache" ] || { echo "build-deb.sh: $build is not a configured CMake build" >&2; exit 1; }
grep -q '^CMAKE_INSTALL_PREFIX:PATH=/usr$' "$cache" || {
  echo "build-deb.sh: $build is configured with $(grep '^CMAKE_INSTALL_PREFIX:' "$cache"); the package needs /usr (cmake -DCMAKE_INSTALL_PREFIX=/usr '$build')" >&2
  exit 1
}
if grep -q '^MLTAP_SANITIZE:STRING=.\+' "$cache"; then
  echo "build-deb.sh: $build is a sanitizer build; package a normal one" >&2
  exit 1
fi
cmake --build "$build" -j "$jobs" --target mltap_package

# cpack installs into its own staging directory (DESTDIR), never into this machine's /etc or /usr.
work="$build/deb-staging"
rm -rf "$work"
cpack -G DEB --config "$build/CPackConfig.cmake" -B "$work" >"$work.log" 2>&1 || {
  cat "$work.log" >&2
  exit 1
}
deb=$(ls "$work"/mltap_*.deb)
name=$(basename "$deb")
mv -f "$deb" "$outdir/$name"
deb="$outdir/$name"

# ---- what the package must contain ----
fail=0
contents=$(dpkg-deb -c "$deb" | awk '{print $6}' | sed 's,^\./,/,')
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
need() {
  printf '%s\n' "$contents" | grep -qx -- "$1" || { echo "build-deb.sh: the package lacks $1" >&2; fail=1; }
}
need /usr/sbin/mltapd
need /usr/bin/mltap
need "/usr/lib/$multiarch/libmltap.so.1"
need "/usr/lib/$multiarch/libmltap.so"
need "/usr/lib/$multiarch/pkgconfig/mltap.pc"
for h in "$root"/shm/include/mltap/*.h "$root"/shm/include/mltap/*.hpp; do
  need "/usr/include/mltap/$(basename "$h")"
done
if grep -q '^MLTAP_BUILD_PYTHON:BOOL=ON$' "$cache"; then
  need /usr/lib/python3/dist-packages/mltap/__init__.py
  printf '%s\n' "$contents" | grep -q '^/usr/lib/python3/dist-packages/mltap/_mltap\..*\.so$' || {
    echo "build-deb.sh: the package lacks the extension module mltap._mltap" >&2
    fail=1
  }
  for f in "$build"/python/mltap/*.py "$build"/python/mltap/*.so; do
    [ -e "$f" ] && need "/usr/lib/python3/dist-packages/mltap/$(basename "$f")"
  done
fi
need /etc/mltap/mltapd.yaml
need /lib/systemd/system/mltapd.service
need /usr/share/mltap/prometheus/mltap.rules.yml
need /usr/share/mltap/prometheus/mltap.fleet.rules.yml
need /usr/share/mltap/prometheus/mltap.performance.rules.yml
need /usr/share/mltap/grafana/mltap.json
need /usr/share/doc/mltap/copyright
need /usr/share/doc/mltap/changelog.gz
need /usr/share/doc/mltap/examples/alertmanager.example.yml
need /usr/share/man/man8/mltapd.8.gz
dpkg-deb -I "$deb" conffiles | grep -qx /etc/mltap/mltapd.yaml || {
  echo "build-deb.sh: /etc/mltap/mltapd.yaml is not a conffile" >&2
  fail=1
}
version=$(dpkg-deb -f "$deb" Version)
head -1 "$root/packaging/debian/changelog" | grep -q "^mltap ($version) " || {
  echo "build-deb.sh: packaging/debian/changelog's first entry is not version $version: add one" >&2
  fail=1
}
[ $fail -eq 0 ] || exit 1

size=$(du -k "$deb" | cut -f1)
echo "$deb: ${size} KiB, $(printf '%s\n' "$contents" | grep -vc '/$') files, built in $(( $(date +%s) - t0 )) s"
echo "Depends: $(dpkg-deb -f "$deb" Depends)"
