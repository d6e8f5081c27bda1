#!/usr/bin/env bash
# Check deblurd's systemd files the way CI can without systemd as PID 1:
#
#   1. `systemd-analyze verify --recursive-errors=yes --man=no` on deblurd.service alone and
#      with each platform drop-in (rpi, jetson). A typo'd directive or section, a bad value
#      or a missing executable fails. ExecStart= is pointed at an existing deblurd (the CI
#      venv's) in a temporary copy, because verify insists the binary exists.
#   2. `systemd-analyze security --offline=yes` on the same three: the "Overall exposure
#      level" must be at most MAX (default 2.0).
#   3. sysusers.d and tmpfiles.d entries applied for real into a scratch root
#      (`systemd-sysusers --root`, `systemd-tmpfiles --root --create`).
#   4. the udev rule with `udevadm verify` where this udevadm has it (systemd >= 254).
#
#   tools/check_systemd.sh [--units DIR] [--bin PATH] [--max-exposure MAX]
#
# --units: folder with deblurd.service etc. (default: systemd/ of this checkout);
# --bin:   deblurd executable for ExecStart= (default: $VENV/bin/deblurd, .venv/bin/deblurd,
#          or deblurd on PATH).
# Installs Debian's `systemd` package when systemd-analyze is missing and we are root
# (PID 1 need not be systemd). Exit status: 0 all good, 1 a check failed, 2 cannot run.
set -euo pipefail

ROOT_DIR=$(cd "$(dirname "$0")/.." && pwd)
UNITS="$ROOT_DIR/systemd"
BIN=""
MAX=2.0
PLATFORMS=(generic rpi jetson)
INSTALLED_EXEC=/opt/deblurd/venv/bin/deblurd

while [[ $# -gt 0 ]]; do
    case "$1" in
        --units) UNITS=$(cd "$2" && pwd); shift 2 ;;
        --bin) BIN=$2; shift 2 ;;
        --max-exposure) MAX=$2; shift 2 ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "check_systemd: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

say() { echo "check_systemd: $*"; }
fail=0
failed() { echo "check_systemd: FAIL: $*" >&2; fail=1; }

if ! command -v systemd-analyze >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        say "systemd-analyze missing: apt-get install systemd"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q >/dev/null
        apt-get install -y -q --no-install-recommends systemd >/dev/null
    else
        echo "check_systemd: systemd-analyze not found; install Debian's 'systemd' package" \
             "(sudo apt-get install systemd)" >&2
        exit 2
    fi
fi
say "$(systemd-analyze --version | head -n1)"

if [[ -z "$BIN" ]]; then
    for candidate in "${VENV:-}/bin/deblurd" "$ROOT_DIR/.venv/bin/deblurd" "$(command -v deblurd || true)"; do
        if [[ -n "$candidate" && "$candidate" != /bin/deblurd && -x "$candidate" ]]; then
            BIN=$candidate
            break
        fi
    done
fi
if [[ -z "$BIN" || ! -x "$BIN" ]]; then
    echo "check_systemd: no deblurd executable to point ExecStart= at (pass --bin PATH)" >&2
    exit 2
fi
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
say "ExecStart= pointed at $BIN"

for f in deblurd.service deblurd.sysusers.conf deblurd-gpio.sysusers.conf deblurd.tmpfiles.conf; do
    [[ -f "$UNITS/$f" ]] || { echo "check_systemd: $UNITS/$f missing" >&2; exit 2; }
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/check_systemd.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# Messages that mean systemd ignored part of the unit (verify's exit status alone is not
# enough on every version: without --recursive-errors typos even exit 0).
BAD='Unknown key|Unknown section|[Ff]ailed to parse|[Ii]nvalid|ignoring|not executable|No such file'

for platform in "${PLATFORMS[@]}"; do
    dir="$TMP/$platform"
    mkdir -p "$dir"
    sed "s#$INSTALLED_EXEC#$BIN#g" "$UNITS/deblurd.service" > "$dir/deblurd.service"
    if [[ $platform != generic ]]; then
        dropin="$UNITS/deblurd.service.d/$platform.conf"
        [[ -f "$dropin" ]] || { failed "$dropin missing"; continue; }
        mkdir -p "$dir/deblurd.service.d"
        sed "s#$INSTALLED_EXEC#$BIN#g" "$dropin" > "$dir/deblurd.service.d/10-$platform.conf"
    fi

    set +e
    out=$(cd "$dir" && systemd-analyze verify --recursive-errors=yes --man=no "$dir/deblurd.service" 2>&1)
    rc=$?
    set -e
    if [[ -n "$out" ]]; then
        printf '%s\n' "$out" | sed "s#^#  verify[$platform]: #"
    fi
    if [[ $rc -ne 0 ]]; then
        failed "systemd-analyze verify ($platform) exited $rc"
    elif grep -Eq "$BAD" <<<"$out"; then
        failed "systemd-analyze verify ($platform) reported problems"
    else
        say "verify [$platform]: ok"
    fi

    set +e
    sec=$(cd "$dir" && systemd-analyze security --offline=yes --no-pager "$dir/deblurd.service" 2>&1)
    rc=$?
    set -e
    line=$(grep -E 'Overall exposure level for deblurd.service' <<<"$sec" || true)
    score=$(sed -nE 's/.*Overall exposure level for deblurd\.service: ([0-9]+(\.[0-9]+)?).*/\1/p' <<<"$line")
    if [[ -z "$score" ]]; then
        printf '%s\n' "$sec" | tail -n 5 >&2
        failed "systemd-analyze security ($platform): no exposure level (exit $rc)"
    elif awk -v s="$score" -v m="$MAX" 'BEGIN { exit !(s > m) }'; then
        printf '%s\n' "$sec" | grep -E '^✗' >&2 || true
        failed "exposure [$platform] $score > $MAX"
    else
        say "exposure [$platform]: $score (max $MAX)"
    fi
    if grep -Eq "$BAD" <<<"$sec"; then
        grep -E "$BAD" <<<"$sec" >&2
        failed "systemd-analyze security ($platform) reported problems"
    fi
done

# sysusers + tmpfiles, applied into a scratch root.
sysroot="$TMP/root"
mkdir -p "$sysroot/etc/deblurd"
: > "$sysroot/etc/deblurd/deblurd.toml"
if command -v systemd-sysusers >/dev/null 2>&1; then
    if out=$(systemd-sysusers --root="$sysroot" "$UNITS/deblurd.sysusers.conf" \
            "$UNITS/deblurd-gpio.sysusers.conf" 2>&1) && grep -q '^deblurd:' "$sysroot/etc/passwd" \
            && grep -Eq '^video:.*deblurd' "$sysroot/etc/group" \
            && grep -Eq '^gpio:.*deblurd' "$sysroot/etc/group"; then
        say "sysusers: ok (user deblurd, groups video gpio)"
    else
        printf '%s\n' "$out" >&2
        failed "systemd-sysusers did not create the user and memberships"
    fi
    if out=$(systemd-tmpfiles --root="$sysroot" --create "$UNITS/deblurd.tmpfiles.conf" 2>&1) \
            && [[ -d "$sysroot/var/lib/deblurd/engines" && -d "$sysroot/var/lib/deblurd/results" ]] \
            && [[ $(stat -c %a "$sysroot/var/lib/deblurd") == 750 ]] \
            && [[ $(stat -c %a "$sysroot/etc/deblurd/deblurd.toml") == 640 ]]; then
        say "tmpfiles: ok"
    else
        printf '%s\n' "$out" >&2
        failed "systemd-tmpfiles --create did not make the directories as configured"
    fi
else
    say "systemd-sysusers/systemd-tmpfiles not found: sysusers and tmpfiles not checked"
fi

# udev rules: `udevadm verify` exists from systemd 254; otherwise a syntax sanity check.
for rules in "$UNITS"/*.rules; do
    [[ -e "$rules" ]] || continue
    if udevadm verify --help >/dev/null 2>&1; then
        if udevadm verify "$rules" >/dev/null 2>&1; then
            say "udev $(basename "$rules"): ok"
        else
            failed "udevadm verify $(basename "$rules")"
        fi
    elif grep -vE '^[[:space:]]*(#|$)' "$rules" \
            | grep -vqE '^([A-Z]+(\{[^}]*\})?[=!+:]=?"[^"]*"(, *|$))+$'; then
        failed "udev $(basename "$rules"): a line is not KEY==\"value\", ... (no udevadm verify here)"
    else
        say "udev $(basename "$rules"): syntax ok (udevadm verify not available)"
    fi
done

if [[ $fail -ne 0 ]]; then
    echo "check_systemd: FAILED" >&2
    exit 1
fi
say "all checks passed"
