#!/usr/bin/env bash
# Install pm-sidecar from this checkout on one host: venv, env file, systemd units. Idempotent.
#
#   deploy/install.sh [--prefix DIR] [--no-systemctl] [--python PYTHON]
#                     [--autorun-unit NAME] [--pip-args "ARGS"]
#
# Layout (under --prefix, default /; every path in the units is rendered for it):
#   DIR/opt/pm-sidecar/.venv                       venv with this checkout installed (not editable)
#   DIR/opt/pm-sidecar/{README.md,docs,deploy,.env.example}   when the checkout is elsewhere
#   DIR/etc/pm-sidecar/env                         SIDECAR_* settings, mode 0600, from .env.example;
#                                                  an existing file is never overwritten
#   DIR/etc/systemd/system/pm-sidecar.service, pm-sidecar-bridge.service
#   DIR/etc/systemd/system/NAME.d/pm-sidecar.conf  drop-in: the autorun unit Wants= and is ordered
#                                                  After= the sidecar (NAME: --autorun-unit, default
#                                                  autorun.service)
# Only with --prefix / (the default) and as root: the pm-sidecar system user is created. Unless
# --no-systemctl: `systemctl daemon-reload` and `systemctl enable` of both units (not started:
# edit the env file and run `pm-sidecar check` first, see deploy/README.md).
# --pip-args: extra pip arguments, e.g. "--no-index --find-links /srv/wheels" on an offline host.
set -euo pipefail
# The venv and the units must be readable by the pm-sidecar user whatever root's umask is; the env
# file gets its 0600 explicitly.
umask 022

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX=/
SYSTEMCTL=1
PYTHON=python3
AUTORUN=autorun.service
PIP_ARGS=""

die() { echo "install.sh: $*" >&2; exit 2; }
say() { echo "install.sh: $*"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; PREFIX="$2"; shift 2 ;;
        --no-systemctl) SYSTEMCTL=0; shift ;;
        --python) [ $# -ge 2 ] || die "--python needs an interpreter"; PYTHON="$2"; shift 2 ;;
        --autorun-unit) [ $# -ge 2 ] || die "--autorun-unit needs a unit name"; AUTORUN="$2"; shift 2 ;;
        --pip-args) [ $# -ge 2 ] || die "--pip-args needs a string"; PIP_ARGS="$2"; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

case "$AUTORUN" in
    *.service) ;;
    *) die "--autorun-unit must name a .service unit, got: $AUTORUN" ;;
esac
case "$AUTORUN" in
    *[!A-Za-z0-9@._:-]*) die "--autorun-unit has characters a unit name cannot have: $AUTORUN" ;;
esac
mkdir -p "$PREFIX"
PREFIX="$(cd "$PREFIX" && pwd)"
ROOT="${PREFIX%/}"                 # "" for /, so paths read /opt/..., /etc/...
APP="$ROOT/opt/pm-sidecar"
VENV="$APP/.venv"
ETC="$ROOT/etc/pm-sidecar"
UNITS="$ROOT/etc/systemd/system"

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$PYTHON is older than Python 3.11 (use --python)"
BASE="$("$PYTHON" -c 'import sys; print(sys.base_prefix)')"
case "$BASE" in
    /root/*|/home/*) say "WARNING: $PYTHON lives under $BASE; the venv links to it and the pm-sidecar user" \
        "cannot read it there. Use a system python3.11+ (e.g. --python /usr/bin/python3.11)." ;;
esac

# 1. The service user (only for a real install on this host).
if [ "$ROOT" = "" ] && [ "$(id -u)" = 0 ]; then
    if ! id -u pm-sidecar >/dev/null 2>&1; then
        useradd --system --user-group --no-create-home --shell /usr/sbin/nologin pm-sidecar
        say "created system user pm-sidecar"
    fi
else
    say "not creating the pm-sidecar user (prefix $PREFIX, uid $(id -u)): only for --prefix / as root"
fi

# 2. Code and venv. Not editable: the venv is self-contained, the checkout can move or go.
install -d -m 0755 "$APP"
if [ "$SRC" != "$APP" ]; then
    # The units' Documentation= and the env file's template live here.
    rm -rf "$APP/docs" "$APP/deploy"
    cp -R "$SRC/docs" "$SRC/deploy" "$APP/"
    install -m 0644 "$SRC/README.md" "$SRC/.env.example" "$APP/"
fi
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV" || die "$PYTHON -m venv failed (Debian/Ubuntu: apt-get install python3-venv)"
    say "created venv $VENV"
fi
# shellcheck disable=SC2086  # PIP_ARGS is a list of arguments on purpose
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check $PIP_ARGS "$SRC"
"$VENV/bin/pm-sidecar" --version >/dev/null || die "the installed pm-sidecar does not start"
say "installed $("$VENV/bin/pm-sidecar" --version) into $VENV"

# 3. Configuration: readable by root only (systemd reads it before dropping privileges).
install -d -m 0755 "$ETC"
if [ -e "$ETC/env" ]; then
    say "kept the existing $ETC/env"
else
    install -m 0600 "$SRC/.env.example" "$ETC/env"
    say "created $ETC/env from .env.example (mode 0600): set at least SIDECAR_REDIS_URL"
fi
chmod 0600 "$ETC/env"

# 4. Units, rendered for this prefix: ExecStart=, EnvironmentFile=, Documentation=, the autorun name.
render() {
    sed -e "s#/opt/pm-sidecar#$APP#g" -e "s#/etc/pm-sidecar/#$ETC/#g" -e "s#autorun\.service#$AUTORUN#g" "$1"
}
install -d -m 0755 "$UNITS" "$UNITS/$AUTORUN.d"
for unit in pm-sidecar.service pm-sidecar-bridge.service; do
    render "$SRC/deploy/$unit" > "$UNITS/$unit.tmp"
    chmod 0644 "$UNITS/$unit.tmp"
    mv -f "$UNITS/$unit.tmp" "$UNITS/$unit"
done
render "$SRC/deploy/autorun.service.d/pm-sidecar.conf" > "$UNITS/$AUTORUN.d/pm-sidecar.conf.tmp"
chmod 0644 "$UNITS/$AUTORUN.d/pm-sidecar.conf.tmp"
mv -f "$UNITS/$AUTORUN.d/pm-sidecar.conf.tmp" "$UNITS/$AUTORUN.d/pm-sidecar.conf"
say "units in $UNITS: pm-sidecar.service, pm-sidecar-bridge.service, $AUTORUN.d/pm-sidecar.conf"

# 5. systemd
if [ "$SYSTEMCTL" = 1 ]; then
    systemctl daemon-reload
    systemctl enable pm-sidecar.service pm-sidecar-bridge.service
    say "enabled, not started. Next: edit $ETC/env, then"
    say "  set -a; . $ETC/env; set +a; $VENV/bin/pm-sidecar check"
    say "  systemctl start pm-sidecar pm-sidecar-bridge && $VENV/bin/pm-sidecar status"
else
    say "--no-systemctl: systemd not told (systemctl daemon-reload; systemctl enable pm-sidecar pm-sidecar-bridge)"
fi
