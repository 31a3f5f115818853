#!/usr/bin/env bash
# Load benchmark of the API (run by hand; results go into the issue note):
#   - job submit latency (POST /v1/jobs) and status-poll throughput (GET /v1/jobs/{id}) with wrk;
#   - API memory growth while a 1 GiB upload streams in.
# The API runs in distributed mode against the local PostgreSQL and Redis with NO worker, so the figures
# are the API's own cost (queued jobs stay queued). Needs: wrk (Debian package), curl.
# Usage: benchmarks/load.sh [duration_seconds=15] [connections=8]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-15}
CONN=${2:-8}
PORT=${PORT:-8765}
DB=nncompress_load_$$
WORK=$(mktemp -d)
psql -h 127.0.0.1 -U postgres -d test -qc "CREATE DATABASE $DB" >/dev/null
cleanup() {
    [ -n "${API_PID:-}" ] && kill "$API_PID" 2>/dev/null && wait "$API_PID" 2>/dev/null || true
    psql -h 127.0.0.1 -U postgres -d test -qc "DROP DATABASE IF EXISTS $DB" >/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
export DATABASE_URL="postgresql://postgres@127.0.0.1:5432/$DB"
export BROKER_URL="redis://127.0.0.1:6379/15"
export NNCOMPRESS_STORAGE_DIR="$WORK/storage"
export NNCOMPRESS_MAX_UPLOAD_BYTES=$((2 * 1024 * 1024 * 1024))
# A benchmark, not a rate-limit test: lift the per-tenant limits out of the way.
export NNCOMPRESS_TENANT_REQUESTS_PER_MINUTE=100000000
export NNCOMPRESS_TENANT_MAX_CONCURRENT_JOBS=100000000
.venv/bin/alembic upgrade head >/dev/null
# Distributed mode requires an API key; the benchmark makes one as an operator would.
API_KEY=$(.venv/bin/nncompress keys create --tenant load-bench 2>/dev/null)
export API_KEY
AUTH="Authorization: Bearer $API_KEY"
.venv/bin/uvicorn app.main:create_app --factory --host 127.0.0.1 --port "$PORT" --log-level warning &
API_PID=$!
S="http://127.0.0.1:$PORT"
for _ in $(seq 100); do curl -sf "$S/readyz" >/dev/null && break; sleep 0.2; done
MODEL_ID=$(curl -sf -H "$AUTH" -F file=@nncompress/data/mnist_net.safetensors -F architecture=mnist_net "$S/v1/models" \
    | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["id"])')
export MODEL_ID
echo "## submit: POST /v1/jobs ($CONN connections, ${DURATION}s)"
wrk -t2 -c"$CONN" -d"${DURATION}s" --latency -H "$AUTH" -s benchmarks/load_submit.lua "$S/v1/jobs"
JOB_ID=$(curl -sf -H "$AUTH" "$S/v1/jobs?limit=1" | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["id"])')
echo "## poll: GET /v1/jobs/{id} ($CONN connections, ${DURATION}s)"
wrk -t2 -c"$CONN" -d"${DURATION}s" --latency -H "$AUTH" "$S/v1/jobs/$JOB_ID"
echo "## upload: 1 GiB streamed to POST /v1/models"
rss() { awk '/VmRSS/ {print $2}' "/proc/$API_PID/status"; }
hwm() { awk '/VmHWM/ {print $2}' "/proc/$API_PID/status"; }
# A safetensors file holding one 1 GiB tensor: a well-formed upload that is streamed, hashed, then refused
# because it does not fit mnist_net; and the same size of random bytes (an unknown format).
.venv/bin/python - "$WORK/big.safetensors" <<'PY'
import json, struct, sys
n = 1024 ** 3
header = json.dumps({"w": {"dtype": "F32", "shape": [n // 4], "data_offsets": [0, n]}}).encode()
header += b" " * (-len(header) % 8)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(header)) + header)
    chunk = bytes(1024 * 1024)
    for _ in range(n // len(chunk)):
        f.write(chunk)
PY
head -c $((1024 * 1024 * 1024)) /dev/urandom > "$WORK/big.bin"
for f in big.safetensors big.bin; do
    echo 5 > "/proc/$API_PID/clear_refs"  # resets VmHWM, so the peak below is this upload's
    BEFORE=$(rss)
    START=$(date +%s.%N)
    CODE=$(curl -s -o "$WORK/upload.json" -w '%{http_code}' -H "$AUTH" -F file=@"$WORK/$f" -F architecture=mnist_net "$S/v1/models")
    END=$(date +%s.%N)
    echo "$f: HTTP $CODE in $(echo "$END - $START" | bc) s: $(head -c 160 "$WORK/upload.json")"
    echo "  RSS before ${BEFORE} KiB, after $(rss) KiB, peak during the upload $(hwm) KiB (growth $(( $(hwm) - BEFORE )) KiB)"
done
