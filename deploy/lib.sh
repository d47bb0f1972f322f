# Shared by deploy/image-smoke and deploy/compose-smoke (sourced, not run): an engine that can
# run containers, the base image made without a registry, and the builds.
#
# On a machine without a registry of images (like the one this was written on) the base image
# is made here: debootstrap of Debian bookworm (Debian's own packages, the mirror apt uses)
# with python3.11 and venv, imported as localhost/l2l-base:bookworm and used in place of each
# Dockerfile's FROM (`podman build --from`). pip inside the build reaches the package index the
# way the host's pip does (its CA bundle, mounted), and torch comes from the host: the wheel
# `pip download torch==<pin>` finds (a local wheel folder, or the index), mounted read-only.
# Rootful podman from Debian's packages with runtime runc and explicit ulimits
# (/etc/containers/containers.conf; crun and the default ulimits fail on this kind of machine).
#
# The sourcing script sets SMOKE (its name, for messages) and then calls, in order:
#   smoke_start; ensure_engine; ensure_base_image; build_project_image TAG; build_image TAG DIR
# and registers its own clean-up steps with at_exit. Exit status 77: cannot run containers.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
BASE=${L2L_BASE_IMAGE:-localhost/l2l-base:bookworm}
export MLFLOW_DISABLE_TELEMETRY=true

say() { printf '%s: %s\n' "$SMOKE" "$*" >&2; }
cannot() { say "CANNOT RUN: $*"; exit 77; }

# Clean-up steps run at exit in reverse order of registration (then the work folder goes).
EXIT_STEPS=()
at_exit() { EXIT_STEPS+=("$1"); }
_run_exit_steps() {
    local i
    for (( i=${#EXIT_STEPS[@]}-1; i>=0; i-- )); do eval "${EXIT_STEPS[$i]}" >/dev/null 2>&1 || true; done
    rm -rf "$WORK"
}

smoke_start() {
    WORK=$(mktemp -d "/tmp/$SMOKE.XXXXXX")
    trap _run_exit_steps EXIT
}

# Seconds since the epoch, for the timings the scripts print.
now() { date +%s; }

# -- an engine that can run containers ---------------------------------------------------------------
install_podman() {
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || cannot "podman is missing and this is not root on Debian (set up podman or docker)"
    say "installing podman, runc, debootstrap from Debian's packages"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        podman runc debootstrap uidmap fuse-overlayfs catatonit >/dev/null
}

configure_podman() {
    [ "$(id -u)" = 0 ] || return 0
    mkdir -p /etc/containers
    if ! grep -qs 'runtime = "runc"' /etc/containers/containers.conf; then
        cat >/etc/containers/containers.conf <<'EOF'
# Written by deploy/lib.sh: runc (crun fails on this kind of machine) and explicit ulimits
# (the defaults ask for more than the sandbox grants).
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
EOF
    fi
}

# Sets ENGINE (podman, or docker where only a working docker is there). NEED_PODMAN=1: podman
# only (compose-smoke runs its stack in a podman pod).
ensure_engine() {
    if command -v podman >/dev/null; then
        ENGINE=podman
    elif [ "${NEED_PODMAN:-0}" != 1 ] && command -v docker >/dev/null && docker info >/dev/null 2>&1; then
        ENGINE=docker
    elif [ "${L2L_SMOKE_INSTALL:-${L2L_IMAGE_SMOKE_INSTALL:-0}}" = 1 ]; then
        install_podman
        ENGINE=podman
    else
        local wanted="podman or a working docker"
        [ "${NEED_PODMAN:-0}" = 1 ] && wanted=podman
        cannot "no $wanted on PATH (L2L_SMOKE_INSTALL=1 installs podman on Debian as root)"
    fi
    [ "$ENGINE" = podman ] && configure_podman
    "$ENGINE" info >/dev/null 2>&1 || cannot "$ENGINE info fails: $("$ENGINE" info 2>&1 | tail -1)"
}

# -- the base image ---------------------------------------------------------------------------------------
# Sets BUILD_FROM (the --from arguments of every build) and checks that a container starts.
ensure_base_image() {
    BUILD_FROM=()
    if [ "$ENGINE" = podman ] && [ "${L2L_USE_REGISTRY_BASE:-0}" != 1 ]; then
        if ! podman image exists "$BASE"; then
            command -v debootstrap >/dev/null || { [ "${L2L_SMOKE_INSTALL:-${L2L_IMAGE_SMOKE_INSTALL:-0}}" = 1 ] && install_podman; }
            command -v debootstrap >/dev/null || cannot "debootstrap is missing (needed to make the base image without a registry)"
            local mirror=${L2L_DEBIAN_MIRROR:-http://deb.debian.org/debian} started
            started=$(now)
            say "making $BASE with debootstrap from $mirror (once; minutes)"
            debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
                bookworm "$WORK/rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
                || { tail -20 "$WORK/debootstrap.log" >&2; cannot "debootstrap failed"; }
            rm -rf "$WORK/rootfs/var/cache/apt/archives"/*.deb "$WORK/rootfs/var/lib/apt/lists"/*
            tar -C "$WORK/rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
            rm -rf "$WORK/rootfs"
            say "made $BASE in $(( $(now) - started )) s"
        fi
        BUILD_FROM=(--from "$BASE")
    fi
    local probe=${BUILD_FROM[1]:-python:3.11-slim-bookworm}
    "$ENGINE" run --rm --network host "$probe" true >/dev/null 2>&1 \
        || cannot "$ENGINE cannot start a container: $("$ENGINE" run --rm --network host "$probe" true 2>&1 | tail -1)"
}

# -- builds -----------------------------------------------------------------------------------------------
# build_image TAG DIR [build arguments...]: DIR's Dockerfile on the base image; prints the time.
# Run from the repository root (the scripts cd there).
build_image() {
    local tag=$1 context=$2 started log
    shift 2
    log="$WORK/build-$(basename "$context").log"
    [ "$context" = . ] && log="$WORK/build-project.log"
    started=$(now)
    "$ENGINE" build --network host "${BUILD_FROM[@]}" "$@" -t "$tag" "$context" >"$log" 2>&1 \
        || { tail -40 "$log" >&2; say "FAILED: building $tag"; exit 1; }
    say "built $tag in $(( $(now) - started )) s: $("$ENGINE" image inspect "$tag" --format '{{.Size}}' | awk '{printf "%.2f GB", $1/1e9}')"
}

# build_project_image TAG: the repository's Dockerfile with the host's torch wheel and CA bundle.
build_project_image() {
    local tag=$1 torch_pin ca
    torch_pin=$(grep -E '^torch==' "$ROOT/constraints.txt" | head -1)
    mkdir -p "$WORK/wheels"
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: -d "$WORK/wheels" "$torch_pin" 2>/dev/null \
        || cannot "pip download $torch_pin failed"
    ca=$("$PYTHON" -m pip config get global.cert 2>/dev/null || true)
    ca=${ca:-${PIP_CERT:-${REQUESTS_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}}}
    printf '[global]\ncert = /etc/l2l-build/ca.crt\n' >"$WORK/pip.conf"
    local mounts=(-v "$WORK/wheels:/wheels:ro" -v "$WORK/pip.conf:/etc/pip.conf:ro")
    [ -f "$ca" ] && mounts+=(-v "$ca:/etc/l2l-build/ca.crt:ro")
    say "building $tag with $ENGINE ($(ls "$WORK/wheels"))"
    build_image "$tag" . "${mounts[@]}" \
        --build-arg TORCH_INDEX_URL=https://pypi.org/simple --build-arg TORCH_FIND_LINKS=/wheels
}

# A free TCP port on the loopback.
free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
