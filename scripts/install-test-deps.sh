#!/usr/bin/env bash
# Install what Mado's end-to-end tests need, and only what is missing:
#   dcmtk (storescu), chromium + Japanese fonts, Node.js + npm (playwright-core),
#   Python 3 + venv (moto[server], pydicom, pydicom-data, pynetdicom, schemathesis in .tools/venv),
#   Orthanc (a PACS peer; the tests run it as a plain process), PostgreSQL on 127.0.0.1:5432,
#   the built OHIF viewer in .tools/ohif (scripts/fetch-ohif.sh).
# Idempotent: a second run installs nothing. Debian/Ubuntu, as root or via sudo.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export DEBIAN_FRONTEND=noninteractive

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=(sudo); fi
fi
as_root() { "${SUDO[@]}" "$@"; }

log() { printf '[install-test-deps] %s\n' "$*"; }
have() { command -v "$1" >/dev/null 2>&1; }
pkg_installed() {
  local s
  s="$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)"
  [ "$s" = "install ok installed" ]
}

# dcmtk's storescu (pynetdicom ships a console script of the same name).
# (Output captured first: `grep -q` closing the pipe early would make the
# pipeline fail under pipefail.)
have_dcmtk() {
  local v=""
  [ -x /usr/bin/storescu ] && v="$(/usr/bin/storescu --version 2>&1 || true)"
  case "$v" in *dcmtk*) return 0 ;; esac
  have storescu && v="$(storescu --version 2>&1 || true)"
  case "$v" in *dcmtk*) return 0 ;; *) return 1 ;; esac
}

pg_answers() {
  if have pg_isready; then pg_isready -q -h 127.0.0.1 -p 5432 && return 0 || return 1; fi
  (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null
}

# pydicom-data installs its files as the module data_store; pynetdicom is the third sender;
# schemathesis fuzzes the HTTP API from server/openapi.yaml (scripts/schemathesis.sh)
PY_PKGS=('moto[server]' dicomweb-client pydicom requests pydicom-data pynetdicom schemathesis)
venv_ready() {
  [ -x "$ROOT/.tools/venv/bin/moto_server" ] && [ -x "$ROOT/.tools/venv/bin/schemathesis" ] &&
    "$ROOT/.tools/venv/bin/python" -c 'import moto, dicomweb_client, pydicom, requests, data_store, pynetdicom, schemathesis' >/dev/null 2>&1
}

# ---------------------------------------------------------------- apt
APT=()
have_dcmtk || APT+=(dcmtk)
# Orthanc: the PACS that forwards a study to the gateway (tests start it themselves with a
# temp config; the Debian service is not used)
{ [ -x /usr/sbin/Orthanc ] || have Orthanc; } || APT+=(orthanc)
{ [ -x /usr/bin/chromium ] || have chromium; } || APT+=(chromium)
pkg_installed fonts-ipafont-gothic || APT+=(fonts-ipafont-gothic)
# poppler-utils: pdftotext / pdffonts check the report PDFs (mado-report tests)
{ have pdftotext && have pdffonts; } || APT+=(poppler-utils)
have python3 || APT+=(python3)
have node || APT+=(nodejs)
have npm || APT+=(npm)
FRESH_PG=0
if ! pg_answers && ! have pg_ctlcluster; then APT+=(postgresql); FRESH_PG=1; fi
# the JPEG-LS codec (dicom-pixeldata feature charls) builds with cmake and a C++ compiler
have cmake || APT+=(cmake)
have g++ || APT+=(g++)
# libjpeg-turbo (rendered JPEG, crate turbojpeg) builds from source: cmake + nasm
have nasm || APT+=(nasm)
# the TLS drill makes its CA and certificates with the openssl CLI
have openssl || APT+=(openssl)
# Python test peers live in .tools/venv (moto S3 server, dicomweb-client)
if ! venv_ready; then
  { have python3 && python3 -c 'import venv, ensurepip' >/dev/null 2>&1; } || APT+=(python3-venv)
  { have python3 && python3 -m pip --version >/dev/null 2>&1; } || APT+=(python3-pip)
fi

if [ "${#APT[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] && [ "${#SUDO[@]}" -eq 0 ]; then
    log "missing: ${APT[*]} — run as root or install sudo" >&2
    exit 1
  fi
  log "apt-get install ${APT[*]}"
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "${APT[@]}"
else
  log "system packages: nothing to install"
fi

# ---------------------------------------------------------------- python peers
if venv_ready; then
  log "python peers: present in .tools/venv"
else
  log "installing ${PY_PKGS[*]} into .tools/venv"
  [ -x "$ROOT/.tools/venv/bin/python" ] || python3 -m venv "$ROOT/.tools/venv"
  "$ROOT/.tools/venv/bin/python" -m pip install -q --upgrade pip
  "$ROOT/.tools/venv/bin/python" -m pip install -q "${PY_PKGS[@]}"
fi

# ---------------------------------------------------------------- npm packages
# tests/browser: playwright-core (the browser is /usr/bin/chromium);
# tests/oidc: oidc-provider, the real OpenID Provider of the OIDC tests.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
for dir in browser:playwright-core oidc:oidc-provider; do
  sub="${dir%%:*}"; pkg="${dir#*:}"
  if [ -d "$ROOT/tests/$sub/node_modules/$pkg" ]; then
    log "$pkg: present"
  else
    log "npm install in tests/$sub ($pkg)"
    ( cd "$ROOT/tests/$sub" && { npm ci --no-audit --no-fund || npm install --no-audit --no-fund; } )
  fi
done

# ---------------------------------------------------------------- OHIF viewer
# The OHIF check (server/tests/it/ohif.rs) serves a built OHIF from
# .tools/ohif (npm @ohif/app dist, ~10 s cold).
if [ -f "$ROOT/.tools/ohif/index.html" ]; then
  log "OHIF: present in .tools/ohif"
else
  log "fetching OHIF into .tools/ohif"
  bash "$ROOT/scripts/fetch-ohif.sh" "$ROOT/.tools/ohif"
fi

# ---------------------------------------------------------------- PostgreSQL
if pg_answers; then
  log "PostgreSQL: answering on 127.0.0.1:5432"
else
  VERSION="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1 || true)"
  if [ -z "$VERSION" ]; then
    log "PostgreSQL is installed but has no cluster in /etc/postgresql" >&2
    exit 1
  fi
  HBA="/etc/postgresql/$VERSION/main/pg_hba.conf"
  if [ "$FRESH_PG" = 1 ] && ! as_root grep -q '^host all postgres 127.0.0.1/32 trust' "$HBA"; then
    # Test machines only: trust local TCP connections for user postgres.
    log "allowing trust auth for postgres on 127.0.0.1 ($HBA)"
    as_root sed -i '1i host all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust' "$HBA"
  fi
  log "starting PostgreSQL $VERSION"
  as_root pg_ctlcluster --skip-systemctl-redirect "$VERSION" main start || true
  for _ in $(seq 1 60); do pg_answers && break; sleep 0.5; done
  if ! pg_answers; then
    log "PostgreSQL does not answer on 127.0.0.1:5432" >&2
    exit 1
  fi
fi

log "done"
