#!/usr/bin/env bash
# The test command (see README):   ./scripts/test.sh [cargo test args...]
#   e.g. ./scripts/test.sh --test harness      ./scripts/test.sh -- --nocapture
#
# Installs what the integration tests need when it is missing, then runs
# `cargo test --all-targets ARGS...` and exits with its status:
#   - Debian packages: victoria-metrics (the database in tests), influxdb (InfluxDB
#     1.x: a real engine that enforces field types and answers the dashboards'
#     InfluxQL; the tests start their own influxd, never the packaged service), prometheus
#     (runs the gateway-health dashboard's PromQL on the daemon's /metrics in
#     tests/dashboards.rs; started by the test, never the packaged service), mosquitto (the
#     MQTT broker in tests), socat (serial-port pairs), libssl-dev and pkg-config
#     (native-tls), systemd (`systemd-analyze security --offline=yes` scores
#     systemd/facilityd.service in tests/systemd.rs), chromium (renders the owners' report
#     and the handover record headless, tests/support/browser.rs) with fonts-wqy-zenhei (the
#     pages' Chinese terms, such as 承接查验, in the screenshots); `apt-get update` once, then
#     `apt-get install`, as root (or sudo);
#   - a Python venv at target/test-venv with pymodbus (the independent Modbus
#     server, tests/fixtures/pymodbus_server.py) and pyserial (its serial RTU
#     server, for the RS-485 tests over socat ptys), exported to the tests as
#     PYMODBUS_PYTHON. (Not FACILITYD_*: facilityd reads every FACILITYD_* variable
#     as config and rejects unknown keys, which would break tests that run it.)
# When everything is present it installs nothing and goes straight to cargo.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYMODBUS_VERSION=3.8.6
PYSERIAL_VERSION=3.5
VENV=target/test-venv
APT_PACKAGES=(victoria-metrics influxdb mosquitto socat libssl-dev pkg-config systemd util-linux prometheus chromium fonts-wqy-zenhei)

say() { printf '==> test.sh: %s\n' "$*" >&2; }

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        say "need root to run: $*"
        exit 1
    fi
}

apt_updated=
apt_install() {
    if [[ -z $apt_updated ]]; then
        say "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        apt_updated=1
    fi
    say "installing Debian packages: $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

is_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# --- Debian packages ----------------------------------------------------------
if command -v dpkg-query >/dev/null 2>&1; then
    missing=()
    for pkg in "${APT_PACKAGES[@]}"; do
        is_installed "$pkg" || missing+=("$pkg")
    done
    if ((${#missing[@]} > 0)); then
        apt_install "${missing[@]}"
    fi
else
    say "not a Debian system: make sure these are installed: ${APT_PACKAGES[*]}"
fi

# --- Python venv with pymodbus --------------------------------------------------
venv_ok() {
    [[ -x $VENV/bin/python ]] &&
        "$VENV/bin/python" -c "import sys, pymodbus, serial; sys.exit(pymodbus.__version__ != '$PYMODBUS_VERSION')" \
            >/dev/null 2>&1
}

if ! venv_ok; then
    if [[ -x $VENV/bin/python ]] && "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
        say "venv $VENV exists; installing pymodbus==$PYMODBUS_VERSION and pyserial into it"
    else
        python=${FACILITYD_VENV_PYTHON:-$(command -v python3 || true)}
        if [[ -z $python ]] || ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
            say "no python3 with venv/ensurepip; using Debian's python3"
            apt_install python3 python3-venv
            python=/usr/bin/python3
        fi
        say "creating Python venv $VENV with $("$python" --version 2>&1) ($python)"
        "$python" -m venv --clear "$VENV"
        say "installing pymodbus==$PYMODBUS_VERSION and pyserial into $VENV"
    fi
    "$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off \
        "pymodbus==$PYMODBUS_VERSION" "pyserial==$PYSERIAL_VERSION"
    if ! venv_ok; then
        say "pymodbus $PYMODBUS_VERSION with pyserial is still not importable from $VENV/bin/python"
        exit 1
    fi
fi
export PYMODBUS_PYTHON="$PWD/$VENV/bin/python"

# --- the tests ------------------------------------------------------------------
# --all-targets unless the arguments pick targets themselves (--test harness, --lib, ...)
all_targets=(--all-targets)
for arg in "$@"; do
    [[ $arg == -- ]] && break
    case $arg in
    --lib | --bins | --bin | --bin=* | --tests | --test | --test=* | --benches | --bench | --bench=* | \
        --examples | --example | --example=* | --all-targets | --doc)
        all_targets=()
        ;;
    esac
done
say "cargo test $(printf "%s " "${all_targets[@]}" "$@")"
status=0
cargo test "${all_targets[@]}" "$@" || status=$?

# A full run also checks the build without the demo (`--no-default-features`): a package
# built that way must compile and must not link the demo's embedded MQTT broker.
if ((status == 0 && $# == 0)); then
    say "cargo check --all-targets --no-default-features (the daemon without the demo)"
    cargo check --all-targets --no-default-features || status=$?
    if cargo tree --no-default-features -e normal --prefix none | grep -q '^rumqttd '; then
        say "rumqttd is linked without the demo feature: it must stay optional (Cargo.toml [features])"
        status=1
    fi
fi

# Doc tests are not part of --all-targets; run them on a full run when there are any.
if ((status == 0 && $# == 0)) && grep -rqE '^\s*//[/!].*```' src 2>/dev/null; then
    say "cargo test --doc"
    cargo test --doc || status=$?
fi
exit "$status"
