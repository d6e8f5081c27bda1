#!/usr/bin/env bash
# Install deblurd as a systemd service on a device (Raspberry Pi 5, Jetson Orin, any
# Debian-like Linux), or into a staging root for an image or for CI.
#
#   sudo tools/install.sh [--platform rpi|jetson|generic] [--source DIR]
#   tools/install.sh --root DIR [...]            (DESTDIR=DIR works the same)
#
# What it does, each step only when something is missing or different (run it twice: the
# second run changes nothing):
#   - the 'deblurd' system user and group, member of video (and gpio on rpi/jetson):
#     sysusers.d entries, applied with systemd-sysusers (useradd/groupadd as a fallback);
#   - /opt/deblurd/venv: a virtual environment (--system-site-packages on rpi and jetson, for
#     Raspberry Pi OS's python3-picamera2 and JetPack's TensorRT and python3-gi) with deblurd
#     installed from --source (extras: rpi → pi, jetson → jetson, and metrics everywhere, for
#     the optional Prometheus endpoint service.metrics_endpoint); skipped when the source is
#     unchanged since the last install (stamp in /opt/deblurd/.install-stamp);
#   - /opt/deblurd/engines/*.onnx (the shipped U-Net) and the docs in /opt/deblurd/share/doc;
#   - /etc/deblurd/deblurd.toml from config/deblurd.toml with the device paths filled in
#     (results in /var/lib/deblurd/results, sockets in /run/deblurd, the camera backend of
#     the platform, the sim camera's tables commented out) -- only when there is none: an
#     existing config is never touched;
#   - deblurd.service in /etc/systemd/system, the platform drop-in as
#     deblurd.service.d/10-PLATFORM.conf, tmpfiles.d, and on Jetson the udev rule for the
#     GPIO chips;
#   - without --root and with systemd as PID 1: systemd-tmpfiles, udev reload (Jetson),
#     systemctl daemon-reload and enable (not start: `sudo systemctl start deblurd`);
#   - on Jetson (not --root): `deblurd build-engine` as the deblurd user (the TensorRT plan
#     goes to /var/lib/deblurd/engines), skipped with a message when this deblurd has no
#     such command.
#
# Options:
#   --root DIR        install below DIR (a staging root; DESTDIR is an alias); nothing on the
#                     running system is changed, no systemctl. The venv's scripts then point
#                     into DIR: use --skip-venv for images, or build the venv on the device.
#   --platform P      rpi, jetson or generic (default: detected from the device tree;
#                     generic with --root)
#   --source DIR      deblurd source checkout (default: the one this script is in)
#   --skip-venv       do not create the venv or pip install (files and config only)
#   --python PY       interpreter for the venv (default: python3)
#   --pip-args ARGS   extra arguments for pip install (e.g. "--no-deps --no-build-isolation")
#   --no-enable       do not systemctl enable
set -euo pipefail

PREFIX=/opt/deblurd
ROOT="${DESTDIR:-}"
PLATFORM=""
SOURCE=$(cd "$(dirname "$0")/.." && pwd)
SKIP_VENV=0
PYTHON=python3
PIP_ARGS=""
ENABLE=1

usage() { sed -n '2,40p' "$0"; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --root) ROOT=$2; shift 2 ;;
        --root=*) ROOT=${1#--root=}; shift ;;
        --platform) PLATFORM=$2; shift 2 ;;
        --platform=*) PLATFORM=${1#--platform=}; shift ;;
        --source) SOURCE=$(cd "$2" && pwd); shift 2 ;;
        --skip-venv) SKIP_VENV=1; shift ;;
        --python) PYTHON=$2; shift 2 ;;
        --pip-args) PIP_ARGS=$2; shift 2 ;;
        --no-enable) ENABLE=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install: unknown argument $1 (see --help)" >&2; exit 64 ;;
    esac
done

say() { echo "install: $*"; }
die() { echo "install: error: $*" >&2; exit 1; }

if [[ -n "$ROOT" ]]; then
    mkdir -p "$ROOT"
    ROOT=$(cd "$ROOT" && pwd)
    [[ "$ROOT" == / ]] && ROOT=""
fi
STAGING=0
[[ -n "$ROOT" ]] && STAGING=1

if [[ -z "$PLATFORM" ]]; then
    model=$(tr -d '\0' </proc/device-tree/model 2>/dev/null || true)
    if [[ $STAGING -eq 1 ]]; then
        PLATFORM=generic
    elif [[ "$model" == *"Raspberry Pi"* ]]; then
        PLATFORM=rpi
    elif [[ "$model" == *Jetson* || -e /etc/nv_tegra_release ]]; then
        PLATFORM=jetson
    else
        PLATFORM=generic
    fi
fi
case "$PLATFORM" in rpi|jetson|generic) ;; *) die "--platform must be rpi, jetson or generic" ;; esac

if [[ $STAGING -eq 0 && $(id -u) -ne 0 ]]; then
    die "installing onto this system needs root (sudo $0 ...), or use --root DIR"
fi
for f in systemd/deblurd.service systemd/deblurd.sysusers.conf systemd/deblurd.tmpfiles.conf \
         config/deblurd.toml pyproject.toml; do
    [[ -f "$SOURCE/$f" ]] || die "$SOURCE/$f missing (is --source a deblurd checkout?)"
done
say "platform $PLATFORM, source $SOURCE, root ${ROOT:-/}"

CHANGED=0
# put SRC DEST MODE: install SRC as DEST with MODE unless it is already identical.
put() {
    local src=$1 dest="$ROOT$2" mode=$3
    if [[ -f "$dest" ]] && cmp -s "$src" "$dest" && [[ $(stat -c %a "$dest") == "$mode" ]]; then
        return 0
    fi
    mkdir -p "$(dirname "$dest")"
    install -m "$mode" "$src" "$dest"
    say "installed $2"
    CHANGED=$((CHANGED + 1))
}
# remove PATH: remove a file we installed earlier that no longer belongs (other platform).
remove() {
    if [[ -e "$ROOT$1" ]]; then
        rm -f "$ROOT$1"
        say "removed $1"
        CHANGED=$((CHANGED + 1))
    fi
}
# dir PATH MODE: make a directory with MODE (ownership is left to tmpfiles/systemd).
dir() {
    local d="$ROOT$1"
    if [[ ! -d "$d" ]]; then
        mkdir -p "$d"
        say "created $1/"
        CHANGED=$((CHANGED + 1))
    fi
    if [[ $(stat -c %a "$d") != "$2" ]]; then
        chmod "$2" "$d"
        CHANGED=$((CHANGED + 1))
    fi
}
have_systemd_pid1() { [[ $STAGING -eq 0 && -d /run/systemd/system ]]; }

# ---------------------------------------------------------------- user and groups
put "$SOURCE/systemd/deblurd.sysusers.conf" /etc/sysusers.d/deblurd.conf 644
if [[ $PLATFORM == generic ]]; then
    remove /etc/sysusers.d/deblurd-gpio.conf
else
    put "$SOURCE/systemd/deblurd-gpio.sysusers.conf" /etc/sysusers.d/deblurd-gpio.conf 644
fi
SYSUSERS_FILES=("$ROOT/etc/sysusers.d/deblurd.conf")
[[ -f "$ROOT/etc/sysusers.d/deblurd-gpio.conf" ]] && SYSUSERS_FILES+=("$ROOT/etc/sysusers.d/deblurd-gpio.conf")

user_exists() {  # in the target root
    if [[ $STAGING -eq 1 ]]; then
        grep -q '^deblurd:' "$ROOT/etc/passwd" 2>/dev/null
    else
        getent passwd deblurd >/dev/null
    fi
}
if user_exists; then
    :
elif [[ $STAGING -eq 1 && ! -f "$ROOT/etc/passwd" ]]; then
    say "no $ROOT/etc/passwd: the user is created at first boot by systemd-sysusers"
elif command -v systemd-sysusers >/dev/null 2>&1; then
    if [[ $STAGING -eq 1 ]]; then
        systemd-sysusers --root="$ROOT" "${SYSUSERS_FILES[@]}"
    else
        systemd-sysusers "${SYSUSERS_FILES[@]}"
    fi
    say "created user deblurd"
    CHANGED=$((CHANGED + 1))
else
    rootopt=()
    [[ $STAGING -eq 1 ]] && rootopt=(--root "$ROOT")
    groupadd "${rootopt[@]}" --system deblurd 2>/dev/null || true
    useradd "${rootopt[@]}" --system --gid deblurd --home-dir /var/lib/deblurd \
        --no-create-home --shell /usr/sbin/nologin --comment "deblurd camera daemon" deblurd
    say "created user deblurd (useradd)"
    CHANGED=$((CHANGED + 1))
fi
# Memberships the sysusers 'm' lines ask for, when sysusers was not there to apply them.
if user_exists && ! command -v systemd-sysusers >/dev/null 2>&1; then
    groups=(video)
    [[ $PLATFORM != generic ]] && groups+=(gpio)
    for g in "${groups[@]}"; do
        if ! id -nG deblurd 2>/dev/null | tr ' ' '\n' | grep -qx "$g"; then
            groupadd --system "$g" 2>/dev/null || true
            usermod -aG "$g" deblurd
            CHANGED=$((CHANGED + 1))
        fi
    done
fi

# ---------------------------------------------------------------- venv and package
VENV=$PREFIX/venv
dir "$PREFIX" 755
if [[ $SKIP_VENV -eq 0 ]]; then
    site=()
    extras="[metrics]"
    case $PLATFORM in
        rpi) site=(--system-site-packages); extras="[pi,metrics]" ;;
        jetson) site=(--system-site-packages); extras="[jetson,metrics]" ;;
    esac
    if [[ ! -x "$ROOT$VENV/bin/python" ]]; then
        say "creating $VENV ${site[*]}"
        "$PYTHON" -m venv "${site[@]}" "$ROOT$VENV"
        CHANGED=$((CHANGED + 1))
    fi
    # What pip would install: the package sources, its metadata, the extras and pip args.
    stamp=$( (cd "$SOURCE" && find pyproject.toml README.md daemon/deblurd -type f \
                  ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | LC_ALL=C sort -z \
                  | xargs -0 sha256sum; echo "extras=$extras pip=$PIP_ARGS site=${site[*]}") \
             | sha256sum | cut -d' ' -f1)
    if [[ "$(cat "$ROOT$PREFIX/.install-stamp" 2>/dev/null || true)" != "$stamp" ]]; then
        # Build from a clean copy, so that the checkout gets no build/ or egg-info.
        build=$(mktemp -d "${TMPDIR:-/tmp}/deblurd-install.XXXXXX")
        trap 'rm -rf "$build"' EXIT
        cp -a "$SOURCE/pyproject.toml" "$SOURCE/README.md" "$build/"
        mkdir -p "$build/daemon"
        cp -a "$SOURCE/daemon/deblurd" "$build/daemon/"
        find "$build" -name __pycache__ -prune -exec rm -rf {} +
        if [[ $PLATFORM == jetson ]]; then
            # pycuda builds against JetPack's CUDA (nvcc, headers, libcuda).
            export PATH="$PATH:/usr/local/cuda/bin" CUDA_ROOT=${CUDA_ROOT:-/usr/local/cuda}
        fi
        say "pip install deblurd$extras into $VENV"
        # shellcheck disable=SC2086  # PIP_ARGS is a list of words on purpose
        "$ROOT$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
            $PIP_ARGS "$build$extras"
        printf '%s\n' "$stamp" > "$ROOT$PREFIX/.install-stamp"
        chmod 644 "$ROOT$PREFIX/.install-stamp"
        CHANGED=$((CHANGED + 1))
    else
        say "deblurd in $VENV is up to date"
    fi
else
    say "--skip-venv: no venv, no pip install"
fi

# ---------------------------------------------------------------- model, docs
for model in "$SOURCE"/engines/*.onnx; do
    [[ -f "$model" ]] && put "$model" "$PREFIX/engines/$(basename "$model")" 644
done
put "$SOURCE/README.md" "$PREFIX/share/doc/deblurd/README.md" 644
for guide in "$SOURCE"/docs/guides/*.md; do
    [[ -f "$guide" && $(basename "$guide") != README-* ]] && put "$guide" "$PREFIX/share/doc/deblurd/guides/$(basename "$guide")" 644
done

# ---------------------------------------------------------------- config
# set_key SECTION KEY VALUE < in > out: set KEY in [SECTION]: its line, or where there is
# none the first commented-out one (a key unset by default; comments such as the tagged
# table's '# backend = "sim": ...' come before the live key).
set_key() {
    awk -v sect="$1" -v key="$2" -v val="$3" '
        { line[NR] = $0 }
        /^\[.*\]$/ { cur = substr($0, 2, length($0) - 2) }
        cur == sect && !live && $0 ~ ("^" key " = ") { live = NR }
        cur == sect && !commented && $0 ~ ("^# " key " = ") { commented = NR }
        END {
            at = live ? live : commented
            if (!at) { print "set_key: no " key " in [" sect "]" > "/dev/stderr"; exit 1 }
            for (i = 1; i <= NR; i++) print (i == at ? key " = " val : line[i])
        }'
}
# comment_table TABLE < in > out: comment out the keys and headers of [TABLE] and its
# sub-tables (the default camera backend's, once another backend is chosen: only the
# chosen backend's table may be in [camera]).
comment_table() {
    awk -v t="$1" '
        /^\[.*\]$/ { cur = substr($0, 2, length($0) - 2); off = (cur == t || index(cur, t ".") == 1); found = found || off }
        off && !/^(#|$)/ { print "# " $0; next }
        { print }
        END { if (!found) { print "comment_table: no [" t "]" > "/dev/stderr"; exit 1 } }'
}
CONFIG=/etc/deblurd/deblurd.toml
dir /etc/deblurd 755
if [[ -e "$ROOT$CONFIG" ]]; then
    say "keeping the existing $CONFIG"
else
    tmp=$(mktemp "${TMPDIR:-/tmp}/deblurd-toml.XXXXXX")
    {
        echo "# Installed by tools/install.sh (platform $PLATFORM) from the documented defaults;"
        echo "# edit freely (the installer never overwrites this file), then check it with"
        echo "#   $VENV/bin/deblurd check-config $CONFIG"
        echo
        cat "$SOURCE/config/deblurd.toml"
    } > "$tmp.0"
    edits=(
        "output|directory|\"/var/lib/deblurd/results\""
        "inference.runtime|model|\"$PREFIX/engines/unet.onnx\""
        "inference|second_model|\"$PREFIX/engines/unet-second.onnx\""
        "service|control_endpoint|\"ipc:///run/deblurd/control.sock\""
        "service|results_endpoint|\"ipc:///run/deblurd/results.sock\""
        "triggers|terminal|false"
    )
    commented=()
    case $PLATFORM in
        rpi) edits+=("camera|backend|\"picamera2\"" "triggers.gpio|enabled|true"); commented+=(camera.sim) ;;
        jetson) edits+=("camera|backend|\"argus\""); commented+=(camera.sim) ;;
    esac
    i=0
    for e in "${edits[@]}"; do
        IFS='|' read -r s k v <<<"$e"
        set_key "$s" "$k" "$v" < "$tmp.$i" > "$tmp.$((i + 1))" || { rm -f "$tmp"*; die "config template changed: cannot set $s.$k"; }
        i=$((i + 1))
    done
    for t in "${commented[@]}"; do
        comment_table "$t" < "$tmp.$i" > "$tmp.$((i + 1))" || { rm -f "$tmp"*; die "config template changed: no [$t] to comment out"; }
        i=$((i + 1))
    done
    install -m 640 "$tmp.$i" "$ROOT$CONFIG"
    rm -f "$tmp"*
    say "installed $CONFIG (camera: $(awk '/^\[camera\]$/{c=1} c && /^backend = /{print $3; exit}' "$ROOT$CONFIG"))"
    CHANGED=$((CHANGED + 1))
fi
# Group read for the service (root:deblurd 0640); in a staging root tmpfiles fixes it at boot.
if user_exists; then
    gid=$(awk -F: '$1 == "deblurd" { print $3 }' "$ROOT/etc/group" 2>/dev/null || true)
    [[ $STAGING -eq 0 ]] && gid=$(getent group deblurd | cut -d: -f3)
    if [[ -n "$gid" && $(stat -c %g "$ROOT$CONFIG") != "$gid" ]]; then
        chown "0:$gid" "$ROOT$CONFIG"
        CHANGED=$((CHANGED + 1))
    fi
fi

# ---------------------------------------------------------------- systemd files
UNITDIR=/etc/systemd/system
put "$SOURCE/systemd/deblurd.service" "$UNITDIR/deblurd.service" 644
for p in rpi jetson; do
    if [[ $p == "$PLATFORM" ]]; then
        put "$SOURCE/systemd/deblurd.service.d/$p.conf" "$UNITDIR/deblurd.service.d/10-$p.conf" 644
    else
        remove "$UNITDIR/deblurd.service.d/10-$p.conf"
    fi
done
put "$SOURCE/systemd/deblurd.tmpfiles.conf" /etc/tmpfiles.d/deblurd.conf 644
if [[ $PLATFORM == jetson ]]; then
    put "$SOURCE/systemd/60-deblurd-gpio.rules" /etc/udev/rules.d/60-deblurd-gpio.rules 644
else
    remove /etc/udev/rules.d/60-deblurd-gpio.rules
fi

# State directories: tmpfiles when the user exists in the target, else plain folders whose
# ownership tmpfiles and StateDirectory= set at boot / first start.
if user_exists && command -v systemd-tmpfiles >/dev/null 2>&1; then
    tree() { { find "$ROOT/var/lib/deblurd" "$ROOT/etc/deblurd" -printf '%p %m %U %G\n' 2>/dev/null || true; } | sort | sha256sum; }
    before=$(tree)
    if [[ $STAGING -eq 1 ]]; then
        systemd-tmpfiles --root="$ROOT" --create "$ROOT/etc/tmpfiles.d/deblurd.conf"
    else
        systemd-tmpfiles --create /etc/tmpfiles.d/deblurd.conf
    fi
    after=$(tree)
    [[ "$before" != "$after" ]] && CHANGED=$((CHANGED + 1)) && say "applied tmpfiles.d/deblurd.conf"
else
    dir /var/lib/deblurd 750
    dir /var/lib/deblurd/engines 750
    dir /var/lib/deblurd/results 750
fi

if [[ $SKIP_VENV -eq 0 && -x "$ROOT$VENV/bin/deblurd" ]]; then
    "$ROOT$VENV/bin/deblurd" check-config "$ROOT$CONFIG" >/dev/null \
        || die "$CONFIG does not pass check-config (see above)"
    say "$CONFIG passes check-config"
fi

# ---------------------------------------------------------------- activate
if have_systemd_pid1; then
    if [[ $PLATFORM == jetson ]] && command -v udevadm >/dev/null 2>&1; then
        udevadm control --reload-rules
        udevadm trigger --subsystem-match=gpio
    fi
    systemctl daemon-reload
    if [[ $ENABLE -eq 1 ]] && ! systemctl is-enabled --quiet deblurd.service; then
        systemctl enable deblurd.service
        CHANGED=$((CHANGED + 1))
    fi
elif [[ $STAGING -eq 0 ]]; then
    say "systemd is not PID 1 here: no daemon-reload/enable"
fi

if [[ $PLATFORM == jetson ]]; then
    if [[ $STAGING -eq 1 || $SKIP_VENV -eq 1 ]]; then
        say "TensorRT plan: run on the device: sudo -u deblurd STATE_DIRECTORY=/var/lib/deblurd $VENV/bin/deblurd build-engine"
    elif "$VENV/bin/deblurd" build-engine --help >/dev/null 2>&1; then
        say "building the TensorRT plan (minutes the first time)"
        runuser -u deblurd -- env STATE_DIRECTORY=/var/lib/deblurd DEBLURD_CONFIG="$CONFIG" \
            "$VENV/bin/deblurd" build-engine
    else
        say "this deblurd has no build-engine command yet: TensorRT plan not built (the" \
            "daemon uses onnxruntime until then)"
    fi
fi

if [[ $CHANGED -eq 0 ]]; then
    say "nothing to do: already installed"
else
    say "done ($CHANGED changes)"
fi
if [[ $STAGING -eq 0 ]]; then
    say "next: sudo systemctl start deblurd; journalctl -u deblurd -f; $VENV/bin/deblurctl status" \
        "(as root or a member of group deblurd: sudo usermod -aG deblurd \$USER)"
fi
