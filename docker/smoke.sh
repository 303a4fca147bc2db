#!/usr/bin/env bash
# Smoke test of a built cbir image, with buildah (no Docker engine needed; root).
#
#   buildah bud --isolation chroot --network host --format docker -t cbir:local -f docker/Dockerfile .
#   docker/smoke.sh [IMAGE]            (default cbir:local)
#
# Starts the image's own entry point and command (migrations, then `cbir serve`) as the image's user, waits
# for /health and for the image's HEALTHCHECK command, runs a bulk `cbir index` in a second process beside
# the running service (both on the image's /data volume), then searches over HTTP and checks the answers: the
# query itself first, its class next. Also checks the page, a thumbnail, /metrics, the JSON logs, a graceful
# stop on SIGTERM and that the data stayed on the volume.
# Sample photos come from Corel-1K in ../shared/datasets (or SMOKE_IMAGES: a folder with one sub-folder
# of images per class). Too slow for CI (the image is several GB); run it before a release.
set -euo pipefail

image=${1:-cbir:local}
here=$(cd "$(dirname "$0")" && pwd)
samples=${SMOKE_IMAGES:-$here/../../shared/datasets/corel1k}
classes=(dinosaurs bus flowers)
per_class=3

say() { printf '\033[1msmoke:\033[0m %s\n' "$*"; }
fail() { printf '\033[1;31msmoke: FAILED:\033[0m %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "buildah run needs root here: run as root (sudo $0)"
command -v buildah >/dev/null || fail "buildah is missing: apt-get install buildah"
buildah inspect --type image "$image" >/dev/null 2>&1 \
  || fail "no image $image: build it first (see the top of this script)"
[ -d "$samples" ] || fail "no sample photos at $samples: set SMOKE_IMAGES to a folder of class sub-folders"

work=$(mktemp -d)
ctr=""
server=""
cleanup() {
  status=$?
  if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
    # (an early failure) buildah run ends the service when it is told to stop.
    kill -TERM "$server" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$server" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$server" 2>/dev/null && { echo "smoke: the service ignored SIGTERM for 30 s" >&2; kill -KILL "$server"; }
  fi
  if [ "$status" != 0 ] && [ -f "$work/serve.log" ]; then
    echo "--- last lines of the service's log ---" >&2
    tail -n 30 "$work/serve.log" >&2
  fi
  [ -n "$ctr" ] && buildah rm "$ctr" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"

mkdir -p "$work/import"
for class in "${classes[@]}"; do
  find "$samples/$class" -maxdepth 1 -type f | sort | head -n "$per_class" \
    | while read -r photo; do cp "$photo" "$work/import/"; done
done
query=$(find "$work/import" -name "${classes[0]}*" | sort | head -n 1)
expected=$(( ${#classes[@]} * per_class ))

ctr=$(buildah from --name "cbir-smoke-$$" "$image")
config=$(buildah inspect --type container "$ctr")
read_config() { python3 -c "import json, sys; c = json.load(sys.stdin)['Docker']['config']; $1" <<<"$config"; }
mapfile -t entry < <(read_config 'print("\n".join((c.get("Entrypoint") or []) + (c.get("Cmd") or [])))')
mapfile -t health < <(read_config 'print("\n".join((c.get("Healthcheck") or {}).get("Test", [])[1:]))')
user=$(read_config 'print(c.get("User") or "root")')
say "image $image: user '$user', entry point: ${entry[*]}"
[ "$user" != root ] && [ "$user" != 0 ] || fail "the image runs as root"
if [ -z "${health[*]}" ]; then
  # The OCI image format (buildah's default) has no field for it: Docker's format keeps it.
  say "warning: the image has no HEALTHCHECK (built without --format docker); checking with cbir-healthcheck"
  health=(cbir-healthcheck)
fi

buildah copy --chown 10001:10001 "$ctr" "$work/import" /import >/dev/null
# No -v for /data: buildah gives the container a volume for the image's VOLUME, shared by every `buildah run`
# of this container and initialised from the image (owned by its user), as Docker does for a new volume.
# (buildah 1.28 would hide a host folder bound onto a declared volume behind that volume anyway.)
opts=(--isolation chroot --network host --env "CBIR_PORT=$port")
run() { buildah run "${opts[@]}" "$ctr" -- "$@"; }

say "starting the service on port $port"
# Started directly (not through the function, which would be a subshell): $! is buildah run itself.
buildah run "${opts[@]}" "$ctr" -- "${entry[@]}" >"$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 300); do
  curl -fsS "$base/health" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || fail "the service exited before it became healthy"
  sleep 1
done
curl -fsS "$base/health" >/dev/null || fail "no healthy answer from $base/health within 300 s"
say "healthy: $(curl -fsS "$base/health")"
run "${health[@]}" || fail "the image's HEALTHCHECK (${health[*]}) fails while /health answers"
say "the image's HEALTHCHECK (${health[*]}) passes"

say "bulk index of $expected photos in a second process, beside the running service"
run cbir index /import 2>/dev/null | tee "$work/index.log"
grep -q "added $expected, duplicates 0, skipped 0" "$work/index.log" || fail "the bulk index did not add $expected photos"

say "cbir backup beside the running service"
run cbir backup /tmp/smoke-backup 2>/dev/null | tee "$work/backup.log"
grep -q "backed up $expected images ($expected files" "$work/backup.log" || fail "the backup did not hold $expected images"

say "search by $(basename "$query")"
curl -fsS -F "file=@$query" -F k=5 "$base/search" >"$work/search.json" || fail "POST /search failed"
python3 - "$work/search.json" "$(basename "$query")" "${classes[0]}" "$per_class" <<'EOF' || fail "wrong search results"
import json, sys
results = json.load(open(sys.argv[1]))["results"]
query, cls, per_class = sys.argv[2], sys.argv[3], int(sys.argv[4])
for rank, hit in enumerate(results, 1):
    print(f"  #{rank} {hit['score']:.3f} {hit['original_name']}")
assert results[0]["original_name"] == query and results[0]["score"] > 0.999, "the query itself is not first"
same = [hit["original_name"].startswith(cls) for hit in results[:per_class]]
assert all(same), f"the first {per_class} results are not all {cls}"
EOF
first_id=$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['results'][0]['id'])" "$work/search.json")

curl -fsS "$base/" | grep -q '<title>cbir' || fail "the page at / is not served"
thumb_type=$(curl -fsS -o /dev/null -w '%{content_type}' "$base/images/$first_id/thumbnail?size=128") \
  || fail "no thumbnail"
[ "$thumb_type" = image/jpeg ] || fail "the thumbnail is $thumb_type, not image/jpeg"
curl -fsS "$base/metrics" >"$work/metrics.txt" || fail "no /metrics"
grep -q "^cbir_collection_images $expected.0$" "$work/metrics.txt" || fail "/metrics does not count $expected images"
grep -q '^cbir_http_requests_total{method="POST",route="/search",status="200"} 1.0$' "$work/metrics.txt" \
  || fail "/metrics did not count the search"
grep -q '"logger": "cbir.access"' "$work/serve.log" || fail "the service does not log JSON access lines"
say "page, thumbnail ($thumb_type), /metrics ($(grep -c '^cbir_' "$work/metrics.txt") samples) and JSON logs OK"
# What `docker stop` does: SIGTERM to the container's main process. buildah run would kill its child
# outright, so the signal goes to the service process itself (found among buildah's descendants only).
descendants() { local child; for child in $(ps -o pid= --ppid "$1"); do echo "$child"; descendants "$child"; done; }
service=""
for pid in $(descendants "$server"); do
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
  case "$cmd" in
    buildah*) ;;  # buildah's own helpers, which name the command they run
    *cbir-entrypoint*) fail "the entry point still runs beside the service: it must exec it, or signals miss it" ;;
    *"/cbir serve"*) service=$pid ;;
  esac
done
[ -n "$service" ] || fail "cannot find the service process under buildah run ($server)"
kill -TERM "$service"
# uvicorn re-raises the signal after its graceful shutdown (exit 143 under Docker), so buildah run reports a
# failure whatever happened: the log says whether the shutdown was graceful.
wait "$server" || true
server=""
grep -q '"message": "Application shutdown complete."' "$work/serve.log" || fail "no graceful shutdown in the log"
run sh -c 'test -s /data/index.faiss && test -s /data/cbir.db' || fail "no index and database on the /data volume"
say "the service (pid $service, exec'd by the entry point) shut down gracefully on SIGTERM; data on the volume"
say "PASSED: $image served, indexed $expected photos beside the service, and searched correctly"
