#!/usr/bin/env bash
# izhub developer entry point.
#
#   ./dev.sh demo    build everything, start two simulated IIS and the engine,
#                    send sample messages and show the answers
#   ./dev.sh test    build everything and run every check and test (what CI runs)
#   ./dev.sh bench   benchmark the demo route against the IIS simulator (and the console)
#   ./dev.sh bench-console   the console's API at 1,000,000 messages only
#   ./dev.sh bench-cluster   SQLite vs PostgreSQL, one node vs two (commit mode)
#   ./dev.sh bench-bulk      bulk queries: 10,000 and 100,000 patients
#   ./dev.sh build   build the engine and the plugins only
#   ./dev.sh fuzz [SECONDS]  run every fuzz target (default 600 s each, two at a time)
#   ./dev.sh image   build the engine and its image (podman, reproducible, HEALTHCHECK): local
#                    localhost/izhub:VERSION, build/image/izhub.docker.tar, build/image/rootfs
#   ./dev.sh image-only      the same image from the engine and plugins already built
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)

# Reuse one target directory outside the clone, so a fresh clone on a machine
# that built izhub before does not start cold. A fresh machine simply fills it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/izhub/target}"
PLUGINS=(validate-iz ndc-to-cvx race-ethnicity route-by-jurisdiction stamp-hie require-core-fields test-misbehave test-forbidden-net test-forbidden-fs)
BIN="$CARGO_TARGET_DIR/release/izhub"

log() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

setup() {
    if ! rustup target list --installed | grep -qx wasm32-wasip2; then
        log "installing the wasm32-wasip2 target"
        rustup target add wasm32-wasip2
    fi
}

build_plugins() {
    log "building plugins (wasm32-wasip2)"
    local args=()
    for p in "${PLUGINS[@]}"; do args+=(-p "$p"); done
    cargo build --profile plugin --target wasm32-wasip2 "${args[@]}"
    mkdir -p build/plugins
    for p in "${PLUGINS[@]}"; do
        cp "$CARGO_TARGET_DIR/wasm32-wasip2/plugin/${p//-/_}.wasm" build/plugins/
    done
}

# The operator console: TypeScript + Preact, bundled by esbuild, from the
# lockfile; the engine embeds console/dist when it is built.
build_console() {
    log "building the operator console (npm ci, esbuild)"
    (cd console && npm ci --no-audit --no-fund --silent && npm run --silent build)
}

# The console's browser test: Debian's chromium driven by playwright-core,
# against a real engine with the simulators (run once, after cargo test).
ensure_chromium() {
    if [ ! -x /usr/bin/chromium ]; then
        log "installing Debian's chromium for the browser test"
        local sudo=""
        [ "$(id -u)" = 0 ] || sudo="sudo"
        $sudo apt-get update -q >/dev/null || true
        $sudo apt-get install -y -q chromium >/dev/null
    fi
}

browser_tests() {
    ensure_chromium
    log "console: unit tests, the pages against a scripted API, then the end-to-end browser test"
    (cd console && node tests/hl7.test.mjs && node tests/smoke.mjs)
    IZHUB_BIN="$BIN" IZHUB_PLUGINS="$ROOT/build/plugins" node console/tests/console.test.mjs
}

build_host() {
    log "building the engine (release)"
    cargo build --release -p izhub
}

# Plugins in other languages: Python (componentize-py) and JavaScript
# (componentize-js), each built into a component like the Rust ones.
build_guest_plugins() {
    log "building the Python and JavaScript sample plugins"
    if ! command -v componentize-py >/dev/null 2>&1; then
        python3 -m pip install --quiet componentize-py==0.25.1
    fi
    mkdir -p build/plugins
    (cd plugins/python-stamp && componentize-py -d ../../wit -w plugin componentize app -o ../../build/plugins/python_stamp.wasm)
    (cd plugins/js-stamp && { [ -d node_modules/@bytecodealliance/componentize-js ] || npm ci --no-audit --no-fund --silent; } \
        && node build.mjs ../../build/plugins/js_stamp.wasm)
}

wait_port() {
    local port=$1
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing is listening on port $port" >&2
    return 1
}

PIDS=()
stop_all() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}

demo() {
    setup
    build_plugins
    build_console
    build_host
    trap stop_all EXIT INT TERM
    log "starting two simulated state IIS and the engine"
    "$BIN" sim-iis --listen 127.0.0.1:2601 --name MAIIS & PIDS+=($!)
    "$BIN" sim-iis --listen 127.0.0.1:2602 --name PAIIS & PIDS+=($!)
    wait_port 2601 && wait_port 2602
    "$BIN" check --config samples/demo/izhub.toml
    "$BIN" serve --config samples/demo/izhub.toml & PIDS+=($!)
    wait_port 2575

    log "a Massachusetts patient (the NIST IZ_1_1.1 message): checked, routed to MAIIS, its ACK comes back"
    "$BIN" send --to 127.0.0.1:2575 samples/messages/vxu/vxu-nist-iz-1.1-admin-child-max.hl7
    log "a Pennsylvania patient: routed to PAIIS; the IG's warnings come back merged into the IIS's AA"
    "$BIN" send --to 127.0.0.1:2575 samples/messages/vxu/vxu-adult-z22-new-covid-vaccine.hl7
    log "the same patient's immunization history, queried with QBP^Q11 (RSP^K11 Z32)"
    "$BIN" send --to 127.0.0.1:2575 samples/demo/qbp-history-pa-patient.hl7
    log "a bad message: the engine answers AE itself, one ERR per problem, and no IIS sees it"
    "$BIN" send --to 127.0.0.1:2575 samples/messages/rejected/vxu-missing-birth-date-testerror-36.hl7 || true
    log "a Wisconsin patient: no IIS is configured for WI, so the engine says so"
    "$BIN" send --to 127.0.0.1:2575 samples/messages/vxu/vxu-v04-z22-01.hl7 || true

    if [ -t 0 ] && [ -z "${CI:-}" ]; then
        log "running: MLLP on 127.0.0.1:2575, metrics on http://127.0.0.1:9480/metrics. Ctrl-C stops."
        wait
    fi
}

# Dependency advisories (RustSec). Offline with a local copy of the advisory
# database in IZHUB_ADVISORY_DB; otherwise cargo audit fetches it.
audit() {
    log "cargo audit (dependency advisories)"
    if ! command -v cargo-audit >/dev/null 2>&1; then
        cargo install cargo-audit --locked --quiet
    fi
    if [ -n "${IZHUB_ADVISORY_DB:-}" ] && [ -d "$IZHUB_ADVISORY_DB" ]; then
        cargo audit --db "$IZHUB_ADVISORY_DB" --no-fetch
    elif ! out=$(cargo audit 2>&1); then
        echo "$out"
        if grep -q "couldn't fetch advisory database" <<<"$out"; then
            echo "WARNING: advisory check skipped: the RustSec database cannot be fetched here;" \
                 "set IZHUB_ADVISORY_DB to a local copy to run it offline" >&2
        else
            return 1
        fi
    else
        echo "$out"
    fi
}

# The cluster tests (host/tests/it/pg_cluster.rs) start their own PostgreSQL
# from Debian's binaries: initdb into a temporary directory, run as an
# unprivileged user. Installed here when missing; if that is impossible the
# tests are skipped, loudly, and IZHUB_PG_REQUIRED stays unset.
ensure_postgres() {
    local bin
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
        log "installing Debian's PostgreSQL for the cluster tests"
        local sudo=""
        [ "$(id -u)" = 0 ] || sudo="sudo"
        $sudo apt-get update -q >/dev/null || true
        $sudo apt-get install -y -q postgresql-15 >/dev/null 2>&1 \
            || $sudo apt-get install -y -q postgresql >/dev/null 2>&1 || true
        bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    fi
    if [ -n "$bin" ] && [ -x "$bin/initdb" ]; then
        export IZHUB_PG_BIN="$bin" IZHUB_PG_REQUIRED=1
    else
        printf '\n\033[1;31m!!!!! PostgreSQL could not be installed: the cluster tests (pg_cluster) are SKIPPED !!!!!\033[0m\n\n' >&2
    fi
}

# The deployment tests (host/tests/it/deploy.rs) check the alert rules with
# Debian's promtool and the systemd unit with systemd-analyze; a missing tool
# is reported loudly by the test, which fails under CI=true.
ensure_deploy_tools() {
    if ! command -v promtool >/dev/null 2>&1; then
        log "installing Debian's prometheus (promtool) for the alert rule tests"
        local sudo=""
        [ "$(id -u)" = 0 ] || sudo="sudo"
        $sudo apt-get update -q >/dev/null || true
        $sudo apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 || true
    fi
}

run_tests() {
    setup
    ensure_postgres
    ensure_deploy_tools
    if ! command -v mllp_send >/dev/null 2>&1; then
        log "installing the third-party MLLP client (PyPI hl7) for the interop test"
        python3 -m pip install --quiet hl7==0.4.5
    fi
    build_plugins
    build_guest_plugins
    build_console
    log "cargo fmt --check"
    cargo fmt --all -- --check
    log "cargo clippy -D warnings"
    cargo clippy --workspace --all-targets --release -- -D warnings
    audit
    log "cargo test (build)"
    cargo test --workspace --release --no-run
    # The image of the binary the tests run: its root filesystem is run
    # under chroot by the deploy tests. A subshell, since a non-root
    # assembly re-executes itself in buildah's namespace.
    rm -rf "$IMAGE_DIR/rootfs"
    if ! (image_assemble); then
        echo "!!! the container image could not be built: its test will say so" >&2
    fi
    log "cargo test"
    cargo test --workspace --release
    # cargo test built the engine's binary ($BIN) for the integration tests;
    # the browser test runs that one (`cargo build` alone would build it
    # again, with the features of the engine's dependencies the tests do
    # not need).
    browser_tests
}

bench() {
    setup
    build_plugins
    build_console
    build_host
    trap stop_all EXIT INT TERM
    "$BIN" sim-iis --listen 127.0.0.1:2601 --name MAIIS --log warn & PIDS+=($!)
    "$BIN" sim-iis --listen 127.0.0.1:2602 --name PAIIS --log warn & PIDS+=($!)
    wait_port 2601 && wait_port 2602
    rm -rf build/demo-messages.db* build/bench-journal.db* build/bench-commit-messages.db*
    "$BIN" serve --config samples/demo/izhub.toml --log warn & PIDS+=($!)
    "$BIN" serve --config samples/bench/izhub-relay-nolog.toml --log warn & PIDS+=($!)
    "$BIN" serve --config samples/bench/izhub-commit.toml --log warn & PIDS+=($!)
    wait_port 2575 && wait_port 2576 && wait_port 2585
    log "an ACK-only server to compare with: simple-hl7 on Node.js (npm ci from bench/simple-hl7's lockfile)"
    (cd bench/simple-hl7 && npm ci --no-audit --no-fund --silent)
    node bench/simple-hl7/server.js 2590 2591 & PIDS+=($!)
    wait_port 2590 && wait_port 2591
    local file="${BENCH_FILE:-samples/bench/vxu-nist-3kb.hl7}"
    local patients="${BENCH_PATIENTS:-1000}"
    log "relay mode: engine (demo route: four plugins, message log on) vs simple-hl7 answering ACKs only, alternating rounds
   goals: msgs/s ratio >= 1.5 at 8 and 32 connections; engine CPU <= 0.15 ms per message; engine p99 at 8 connections <= 2.5 ms"
    "$BIN" bench --to 127.0.0.1:2575 --baseline 127.0.0.1:2590 --patients "$patients" \
        --cpu-from 127.0.0.1:9480 --baseline-cpu-from 127.0.0.1:2591 --rounds "${BENCH_ROUNDS_SIMPLE:-3}" \
        --connections "${BENCH_LOG_CONNECTIONS:-8,32}" --messages "${BENCH_MESSAGES:-20000}" --file "$file"
    log "relay mode: engine (validate-iz, ndc-to-cvx, race-ethnicity, route-by-jurisdiction) vs the IIS simulator alone"
    "$BIN" bench --to 127.0.0.1:2575 --baseline 127.0.0.1:2601 --patients "$patients" \
        --cpu-from 127.0.0.1:9480 \
        --connections "${BENCH_CONNECTIONS:-1,8,32}" --messages "${BENCH_MESSAGES:-20000}" --file "$file"
    log "relay mode, the console's message log on (target) vs off ([console] record = false, baseline), same plugins, alternating rounds"
    "$BIN" bench --to 127.0.0.1:2575 --baseline 127.0.0.1:2585 --patients "$patients" \
        --cpu-from 127.0.0.1:9480 --baseline-cpu-from 127.0.0.1:9490 --rounds "${BENCH_ROUNDS:-9}" \
        --connections "${BENCH_LOG_CONNECTIONS:-8,32}" --messages "${BENCH_MESSAGES:-20000}" --file "$file"
    log "relay mode, the message log on vs off at a set load (${BENCH_LOG_RATE:-1000} msgs/s offered; latencies from when each message was due)"
    "$BIN" bench --to 127.0.0.1:2575 --baseline 127.0.0.1:2585 --patients "$patients" \
        --cpu-from 127.0.0.1:9480 --baseline-cpu-from 127.0.0.1:9490 --rounds "${BENCH_ROUNDS:-9}" \
        --rate "${BENCH_LOG_RATE:-1000}" --connections 8 --messages 10000 --file "$file"
    log "commit mode (AA once journaled, then delivered from the journal), same plugins, vs the IIS simulator alone
   goals: engine CPU <= 0.25 ms per message until delivered; msgs/s ratio >= 0.3 at 32 connections"
    "$BIN" bench --to 127.0.0.1:2576 --baseline 127.0.0.1:2601 --patients "$patients" \
        --delivered-from 127.0.0.1:2577 \
        --connections "${BENCH_CONNECTIONS:-1,8,32}" --messages "${BENCH_MESSAGES:-20000}" --file "$file"
    bench_console
    bench_bulk
}

# The console's API at scale: 1,000,000 messages seeded into a message log
# and 200 routes configured, then each endpoint timed (median and worst of
# 20 calls) with curl and a bearer token.
bench_console() {
    local n="${BENCH_CONSOLE_MESSAGES:-1000000}" dir="build/bench-console"
    rm -rf "$dir" && mkdir -p "$dir"
    local token sha
    read -r token sha < <("$BIN" user token | awk '/^token/{t=$2} /^sha256/{s=$2} END{print t, s}')
    {
        printf '[admin]\nlisten = "127.0.0.1:9495"\n\n[[admin.users]]\nname = "bench"\nrole = "admin"\n'
        printf 'password_hash = "%s"\ntoken_sha256 = "%s"\n\n' "$(printf 'bench-password' | "$BIN" user hash --password-stdin | tail -1)" "$sha"
        printf '[console]\nlog = "messages.db"\nkeep_messages = %s\n\n[listeners.ehr]\nlisten = "127.0.0.1:2595"\n\n' "$n"
        for d in 0 1 2 3 4; do printf '[destinations.iis-%s]\nmllp = "127.0.0.1:2601"\n\n' "$d"; done
        for r in $(seq 0 199); do
            printf '[[routes]]\nname = "route-%s"\nsenders = ["CLINIC-%s"]\ndestinations = ["iis-%s"]\n\n' "$r" "$r" "$((r % 5))"
        done
    } > "$dir/izhub.toml"
    log "console: seeding $n messages"
    "$BIN" console seed --config "$dir/izhub.toml" --messages "$n"
    "$BIN" serve --config "$dir/izhub.toml" --log warn & PIDS+=($!)
    wait_port 9495
    local mid=$((n / 2))
    time_get() {
        local what="$1" path="$2" times=()
        for _ in $(seq 20); do
            times+=("$(curl -s -o /dev/null -w '%{time_total}' -H "Authorization: Bearer $token" "http://127.0.0.1:9495$path")")
        done
        printf '%s\n' "${times[@]}" | sort -n | awk -v w="$what" '{a[NR]=$1} END{printf "  %-46s median %6.1f ms   worst %6.1f ms\n", w, a[int((NR+1)/2)]*1000, a[NR]*1000}'
    }
    log "console API at $n messages, 200 routes (curl, 20 calls each)"
    time_get "dashboard (200 routes)" "/api/dashboard"
    time_get "console page" "/console/"
    time_get "search by MSH-10" "/api/messages?control_id=SEED-$mid"
    time_get "search by sender, first page" "/api/messages?sender=CLINIC-7"
    time_get "search by patient id" "/api/messages?patient_id=P1234"
    time_get "search by status" "/api/messages?status=rejected_by_iis"
    time_get "search by detection" "/api/messages?detection=vaccination-lot-missing"
    time_get "search by sender and day" "/api/messages?sender=CLINIC-7&from=$(date -u -d '-3 days' +%Y-%m-%d)&to=$(date -u -d '-2 days' +%Y-%m-%d)"
    time_get "newest 50, no filter" "/api/messages"
    time_get "one message in full" "/api/messages/$mid"
    time_get "content search (24 h, bounded)" "/api/messages?contains=NOSUCHTEXT&from=$(date -u -d '-2 days' +%Y-%m-%dT00:00:00Z)&to=$(date -u -d '-1 days' +%Y-%m-%dT00:00:00Z)"
    time_get "data quality, one sender, 30 days" "/api/quality?sender=CLINIC-7"
    time_get "data quality, every sender, 7 days" "/api/quality?days=7"
    ensure_chromium
    node console/tests/dashboard-load.mjs http://127.0.0.1:9495 bench bench-password route-199 10
}

# libFuzzer targets in engine/fuzz (cargo fuzz). They need unstable compiler
# flags; RUSTC_BOOTSTRAP lets the stable toolchain accept them.
fuzz() {
    local seconds="${1:-600}"
    command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
    local targets=(mllp_codec hl7_message iis_answer soap_envelope)
    (cd engine && for t in "${targets[@]}"; do mkdir -p "fuzz/corpus/$t"; done)
    cp samples/messages/vxu/*.hl7 engine/fuzz/corpus/hl7_message/
    cp samples/corpus/*/*.hl7 engine/fuzz/corpus/iis_answer/
    run_one() {
        (cd engine && CARGO_TARGET_DIR="$CARGO_TARGET_DIR-fuzz" RUSTC_BOOTSTRAP=1 cargo fuzz run "$1" --sanitizer none --release -- \
            -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1)
    }
    for ((i = 0; i < ${#targets[@]}; i += 2)); do
        run_one "${targets[$i]}" & run_one "${targets[$((i + 1))]}" & wait
    done
}

# Bulk queries: a synthetic cohort through the demo's query route to two
# simulated IIS, each taking at most 8 queries at once; then 100,000
# patients for the memory ceiling (peak RSS from /usr/bin/time).
bench_bulk() {
    local dir="build/bench-bulk"
    rm -rf "$dir" && mkdir -p "$dir"
    "$BIN" sim-iis --listen 127.0.0.1:2611 --name MAIIS --synthetic --not-found-percent 5 --max-in-flight 8 --log warn & PIDS+=($!)
    "$BIN" sim-iis --listen 127.0.0.1:2612 --name PAIIS --synthetic --not-found-percent 5 --max-in-flight 8 --log warn & PIDS+=($!)
    wait_port 2611 && wait_port 2612
    for n in "${BENCH_BULK_PATIENTS:-10000}" 100000; do
        awk -v n="$n" 'BEGIN{ print "member_id,family,given,birth_date,sex,address,city,state,zip";
            for (i = 1; i <= n; i++) printf "M%d,Family%d,Given%d,%04d-%02d-%02d,%s,%d Main St,Springfield,%s,%05d\n",
                i, i, i, 2008 + i % 16, 1 + i % 12, 1 + i % 28, (i % 2) ? "F" : "M", i, (i % 2) ? "MA" : "PA", 1000 + i % 9000 }' > "$dir/cohort-$n.csv"
        log "bulk query: $n patients, two simulated IIS, bulk_max_in_flight = 8"
        /usr/bin/time -f 'peak RSS %M KB' "$BIN" bulk run --config samples/bench/izhub-bulk.toml \
            --cohort "$dir/cohort-$n.csv" --out "$dir/out-$n" --log warn
    done
}

# SQLite one node vs PostgreSQL one node vs PostgreSQL two nodes, commit mode,
# the demo route (samples/bench/izhub-commit.toml without the message log),
# 8 and 32 connections; then the claim latency with 10,000 queued. Two nodes
# are measured with one client per node at once (half the connections each):
# add their msgs/s. PostgreSQL runs from a temporary directory as an
# unprivileged user and is removed at the end.
bench_cluster() {
    setup
    ensure_postgres
    [ -n "${IZHUB_PG_BIN:-}" ] || { echo "bench-cluster needs PostgreSQL" >&2; return 1; }
    build_plugins
    build_host
    local dir runas=() port=5499 msgs="${BENCH_MESSAGES:-10000}" file="${BENCH_FILE:-samples/bench/vxu-nist-3kb.hl7}"
    dir=$(mktemp -d /tmp/izhub-bench-pg.XXXXXX)
    if [ "$(id -u)" = 0 ]; then
        id izhub-pg >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin izhub-pg
        chown izhub-pg "$dir"
        runas=(runuser -u izhub-pg --)
    fi
    "${runas[@]}" "$IZHUB_PG_BIN/initdb" -D "$dir/data" -U izhub --auth=trust -E UTF8 >/dev/null
    "${runas[@]}" "$IZHUB_PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/data/server.log" -w \
        -o "-p $port -k $dir/data -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
    # shellcheck disable=SC2317
    # The trap runs after this function has returned: the directory and the
    # user are kept in globals.
    BENCH_PG_DIR=$dir
    BENCH_PG_RUNAS=("${runas[@]}")
    pg_down() { "${BENCH_PG_RUNAS[@]}" "$IZHUB_PG_BIN/pg_ctl" -D "$BENCH_PG_DIR/data" -m fast stop >/dev/null 2>&1 || true; rm -rf "$BENCH_PG_DIR"; }
    trap 'stop_all; pg_down' EXIT INT TERM
    "$BIN" sim-iis --listen 127.0.0.1:2601 --name MAIIS --log warn & PIDS+=($!)
    wait_port 2601
    mkdir -p build/bench-cluster && rm -rf build/bench-cluster/*
    # config NAME LISTEN ADMIN STORE-LINES
    config() {
        sed -e "s|127.0.0.1:2577|127.0.0.1:$3|; s|127.0.0.1:2576|127.0.0.1:$2|" \
            -e "s|^path = \"../../build/bench-journal.db\"|$4|" -e '/^\[console\]/,/^$/d' \
            -e "s|\"\.\./\.\./build/|\"$ROOT/build/|; s|\"\.\./codesets\"|\"$ROOT/samples/codesets\"|" \
            samples/bench/izhub-commit.toml > "build/bench-cluster/$1.toml"
        echo "build/bench-cluster/$1.toml"
    }
    run_one() { # title config...
        local title=$1; shift
        local pids=() c
        for c in "$@"; do "$BIN" serve --config "$c" --log error & pids+=($!); done
        wait_port 2586
        [ $# -lt 2 ] || wait_port 2587
        log "$title"
        if [ $# -lt 2 ]; then
            "$BIN" bench --to 127.0.0.1:2586 --delivered-from 127.0.0.1:2588 --patients 1000 \
                --connections 8,32 --messages "$msgs" --file "$file"
        else
            "$BIN" bench --to 127.0.0.1:2586 --patients 1000 --connections 4,16 --messages "$((msgs / 2))" --file "$file" > build/bench-cluster/a.out &
            local first=$!
            "$BIN" bench --to 127.0.0.1:2587 --patients 1000 --connections 4,16 --messages "$((msgs / 2))" --file "$file" > build/bench-cluster/b.out
            wait "$first"
            echo "-- node a (half the connections):"; cat build/bench-cluster/a.out
            echo "-- node b (half the connections):"; cat build/bench-cluster/b.out
        fi
        for c in "${pids[@]}"; do kill "$c"; wait "$c" 2>/dev/null || true; done
    }
    "$IZHUB_PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U izhub one
    "$IZHUB_PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U izhub two
    local pg="url = \"postgres://izhub@127.0.0.1:$port"
    run_one "commit mode, SQLite, one node" "$(config sqlite 2586 2588 "path = \"$ROOT/build/bench-cluster/journal.db\"")"
    run_one "commit mode, PostgreSQL, one node" "$(config pg-one 2586 2588 "$pg/one\"")"
    run_one "commit mode, PostgreSQL, two nodes (8 and 32 connections in all)" \
        "$(config pg-a 2586 2588 "$pg/two\"")" "$(config pg-b 2587 2589 "$pg/two\"")"
    log "claim latency with 10,000 queued (PostgreSQL)"
    IZHUB_PG_BIN="$IZHUB_PG_BIN" cargo test --release -p izhub --test it -- --ignored --nocapture pg_cluster::claim_latency 2>&1 \
        | grep -E "^claim of|test result"
}

# The container image (docs/deploy.md, "As a container image"): the engine on
# an empty base, nothing pulled from a registry. The image is written here as
# a Docker archive (`docker save`'s format) and loaded into local storage with
# Debian's podman; no builder runs. Docker's format, because the image has a
# HEALTHCHECK and an OCI image has no field for one; and not buildah's Docker
# format, which writes its build container's random id into the image.
# Its root filesystem is made here: the stripped binary, exactly the shared
# libraries it links (with the dynamic loader), an izhub user, the sample
# configuration deploy/image/izhub.toml as /etc/izhub/izhub.toml, the plugins
# and code sets under /var/lib/izhub (root's, read-only to the engine) and
# /var/lib/izhub/data, the one directory the engine writes. Every file has the
# commit's time and a fixed owner, the layer's tar and the archive's are
# sorted, and the configuration is written with jq with the same date and no
# history, so the same sources give the same archive, image id and digest.
# The loaded image is then saved back from local storage, checked against the
# archive, exported to build/image/rootfs and run there under chroot as its
# user: `izhub --version`, and `izhub check` on its configuration.
IMAGE_NAME=localhost/izhub
IMAGE_UID=10001
IMAGE_DIR=build/image
IMAGE_PLUGINS=(validate-iz ndc-to-cvx race-ethnicity route-by-jurisdiction stamp-hie require-core-fields)
IMAGE_ENV=(PATH=/usr/local/bin HOME=/var/lib/izhub IZHUB_CACHE_DIR=/var/lib/izhub/data/plugin-cache)
# The HEALTHCHECK: exec form (the image has no shell), times in seconds.
IMAGE_HEALTH_TEST='["CMD", "/usr/local/bin/izhub", "health", "--url", "http://127.0.0.1:9400/healthz"]'
IMAGE_HEALTH_INTERVAL=30
IMAGE_HEALTH_TIMEOUT=5
IMAGE_HEALTH_START_PERIOD=10
IMAGE_HEALTH_RETRIES=3

# Each tool the image needs, from the Debian package that has it; missing
# ones are installed, and what still is missing is named.
ensure_image_tools() {
    case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH="$PATH:/usr/sbin:/sbin" ;; esac
    local -A pkg=([podman]=podman [objcopy]=binutils [ldd]=libc-bin [jq]=jq [tar]=tar [chroot]=coreutils [sha256sum]=coreutils)
    local t missing=()
    for t in "${!pkg[@]}"; do command -v "$t" >/dev/null 2>&1 || missing+=("${pkg[$t]}"); done
    if [ ${#missing[@]} -gt 0 ]; then
        mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
        log "installing Debian's ${missing[*]} for the container image"
        local sudo=""
        [ "$(id -u)" = 0 ] || sudo="sudo"
        $sudo apt-get update -q >/dev/null || true
        $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || true
    fi
    for t in "${!pkg[@]}"; do
        if ! command -v "$t" >/dev/null 2>&1; then
            echo "dev.sh image: $t is missing and could not be installed (Debian package ${pkg[$t]})" >&2
            return 1
        fi
    done
}

# image_rootfs DIR EPOCH: the image's root filesystem, from $BIN, build/plugins,
# samples/codesets and deploy/image.
image_rootfs() {
    local root=$1 epoch=$2 linked libs=() lib p
    rm -rf "$root"
    mkdir -p "$root"/{etc/izhub,tmp,usr/local/bin,var/lib/izhub/plugins,var/lib/izhub/data}
    # A copy without debug information, local symbols or build ID: the
    # compiler's local symbol names and the linker's build ID depend on the
    # checkout's path, the rest does not (global symbols stay, for
    # backtraces). $BIN is left as it is.
    objcopy --strip-debug --discard-all --remove-section=.note.gnu.build-id \
        "$BIN" "$root/usr/local/bin/izhub"
    # Exactly the shared libraries it links and the dynamic loader, each at
    # the path ldd resolves it to, which is where the loader looks.
    linked=$(ldd "$BIN") || { echo "dev.sh image: ldd cannot read $BIN" >&2; return 1; }
    if grep -q 'not found' <<<"$linked"; then
        echo "$linked" >&2
        echo "dev.sh image: a library $BIN links is missing" >&2
        return 1
    fi
    mapfile -t libs < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$linked")
    for lib in "${libs[@]}"; do
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
    printf '%s\n' "root:x:0:0:root:/root:/sbin/nologin" \
        "izhub:x:$IMAGE_UID:$IMAGE_UID:izhub:/var/lib/izhub:/sbin/nologin" > "$root/etc/passwd"
    printf '%s\n' "root:x:0:" "izhub:x:$IMAGE_UID:" > "$root/etc/group"
    printf '%s\n' "passwd: files" "group: files" "hosts: files dns" > "$root/etc/nsswitch.conf"
    # A PostgreSQL journal over TLS without a `ca` of its own trusts the
    # system's roots: Debian's ca-certificates bundle, when the machine has it.
    if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
        mkdir -p "$root/etc/ssl/certs"
        cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
    fi
    cp deploy/image/izhub.toml "$root/etc/izhub/izhub.toml"
    for p in "${IMAGE_PLUGINS[@]}"; do
        if [ ! -f "build/plugins/${p//-/_}.wasm" ]; then
            echo "dev.sh image: build/plugins/${p//-/_}.wasm is missing (./dev.sh build makes it)" >&2
            return 1
        fi
        cp "build/plugins/${p//-/_}.wasm" "$root/var/lib/izhub/plugins/"
    done
    cp -R samples/codesets "$root/var/lib/izhub/codesets"
    # Owners and modes set here, whatever the umask and the checkout: root
    # owns everything but the data directory (0700, the engine's user).
    chown -R 0:0 "$root"
    find "$root" -type d -exec chmod 0755 {} +
    find "$root" -type f -exec chmod 0644 {} +
    chmod 0755 "$root/usr/local/bin/izhub"
    for lib in "${libs[@]}"; do
        chmod 0755 "$root$lib"
    done
    chmod 1777 "$root/tmp"
    chown "$IMAGE_UID:$IMAGE_UID" "$root/var/lib/izhub/data"
    chmod 0700 "$root/var/lib/izhub/data"
    find "$root" -exec touch -h -d "@$epoch" {} +
}

# image_config VERSION REVISION CREATED DIFF_ID: the image's configuration in
# Docker's format, compact and in a fixed order (no history, no container).
image_config() {
    local version=$1 revision=$2 created=$3 diff_id=$4 platform
    platform=$(podman version --format '{{.Client.OsArch}}')
    jq -cjn \
        --arg created "$created" --arg os "${platform%%/*}" --arg arch "${platform#*/}" \
        --arg user "$IMAGE_UID:$IMAGE_UID" --arg version "$version" --arg revision "$revision" \
        --arg diff_id "$diff_id" --argjson test "$IMAGE_HEALTH_TEST" \
        --argjson interval $((IMAGE_HEALTH_INTERVAL * 1000000000)) \
        --argjson timeout $((IMAGE_HEALTH_TIMEOUT * 1000000000)) \
        --argjson start_period $((IMAGE_HEALTH_START_PERIOD * 1000000000)) \
        --argjson retries "$IMAGE_HEALTH_RETRIES" '{
            created: $created,
            architecture: $arch,
            os: $os,
            config: {
                User: $user,
                ExposedPorts: {"2575/tcp": {}, "9400/tcp": {}},
                Env: $ARGS.positional,
                Entrypoint: ["/usr/local/bin/izhub"],
                Cmd: ["serve", "--config", "/etc/izhub/izhub.toml"],
                Volumes: {"/var/lib/izhub/data": {}},
                WorkingDir: "/var/lib/izhub",
                Labels: {
                    "org.opencontainers.image.created": $created,
                    "org.opencontainers.image.description": "Immunization interface engine: MLLP in, sandboxed WebAssembly plugins, IIS out",
                    "org.opencontainers.image.licenses": "Apache-2.0",
                    "org.opencontainers.image.revision": $revision,
                    "org.opencontainers.image.title": "izhub",
                    "org.opencontainers.image.version": $version
                },
                StopSignal: "SIGTERM",
                Healthcheck: {Test: $test, Interval: $interval, Timeout: $timeout, StartPeriod: $start_period, Retries: $retries}
            },
            rootfs: {type: "layers", diff_ids: [$diff_id]}
        }' --args "${IMAGE_ENV[@]}"
}

# image_export IMAGE DIGEST ID DIR: IMAGE saved back from local storage (its
# layer uncompressed), checked to be the manifest DIGEST with the
# configuration ID, and its one layer (on an empty base: nothing to delete)
# unpacked into DIR, owners and modes kept.
image_export() {
    local image=$1 digest=$2 id=$3 out=$4 saved="$IMAGE_DIR/saved" got layers diff_id
    rm -rf "$saved"
    podman save --quiet --format docker-dir --uncompressed -o "$saved" "$image"
    got="sha256:$(sha256sum <"$saved/manifest.json" | cut -d' ' -f1)"
    if [ "$got" != "$digest" ]; then
        echo "dev.sh image: podman saves $image with the manifest $got, not $digest" >&2
        return 1
    fi
    got=$(jq -r '.config.digest' "$saved/manifest.json")
    if [ "$got" != "sha256:$id" ]; then
        echo "dev.sh image: podman saves $image with the configuration $got, not sha256:$id" >&2
        return 1
    fi
    layers=$(jq -r '.layers[].digest' "$saved/manifest.json")
    if [ "$(wc -w <<<"$layers")" != 1 ]; then
        echo "dev.sh image: $image has $(wc -w <<<"$layers") layers, not one" >&2
        return 1
    fi
    diff_id=$(jq -r '.rootfs.diff_ids[0]' "$saved/$id")
    got="sha256:$(sha256sum <"$saved/${layers#sha256:}" | cut -d' ' -f1)"
    if [ "$layers" != "$diff_id" ] || [ "$got" != "$diff_id" ]; then
        echo "dev.sh image: podman saves $image with the layer $got, its configuration names $diff_id" >&2
        return 1
    fi
    rm -rf "$out" && mkdir -p "$out"
    tar -x --numeric-owner --same-owner --same-permissions -C "$out" -f "$saved/${layers#sha256:}"
    rm -rf "$saved"
}

# image_verify DIR EPOCH: the exported image run as its user, with its environment.
image_verify() {
    local root=$1 epoch=$2 chroot_bin want got
    chroot_bin=$(command -v chroot)
    in_image() { env -i "${IMAGE_ENV[@]}" "$chroot_bin" --userspec="$IMAGE_UID:$IMAGE_UID" "$root" /usr/local/bin/izhub "$@"; }
    want=$("$BIN" --version)
    got=$(in_image --version)
    if [ "$got" != "$want" ]; then
        echo "dev.sh image: the image's izhub says '$got', the build's '$want'" >&2
        return 1
    fi
    echo "$got"
    in_image check --config /etc/izhub/izhub.toml
    # The check kept the compiled plugins in the data directory (so the
    # engine's user can write there); the exported tree is left as the image has it.
    if [ ! -f "$root/var/lib/izhub/data/plugin-cache.key" ]; then
        echo "dev.sh image: izhub could not write its plugin cache in /var/lib/izhub/data" >&2
        return 1
    fi
    rm -rf "$root/var/lib/izhub/data/plugin-cache" "$root/var/lib/izhub/data/plugin-cache.key"
    chmod 0755 "$root"
    touch -d "@$epoch" "$root" "$root/var/lib/izhub/data"
}

# The image from the binary and plugins already built (./dev.sh image builds
# them first). Root is needed for the owners and for chroot; anyone else gets
# a user namespace from podman (its rootless storage, /etc/subuid).
image_assemble() {
    ensure_image_tools
    if [ "$(id -u)" != 0 ]; then
        log "not root: going on in podman's user namespace"
        exec podman unshare "$ROOT/dev.sh" image-only
    fi
    [ -x "$BIN" ] || { echo "dev.sh image: $BIN is missing (./dev.sh build makes it)" >&2; return 1; }
    local version revision epoch created layer id digest old loaded health archive="$IMAGE_DIR/izhub.docker.tar"
    version=$("$BIN" --version | awk '{ print $2 }')
    if ! [[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+ ]]; then
        echo "dev.sh image: no version in '$("$BIN" --version)'" >&2
        return 1
    fi
    revision=$(git rev-parse HEAD)
    epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct HEAD)}
    created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
    if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
        echo "WARNING: the work tree has uncommitted changes; the image is labelled with $revision all the same" >&2
    fi
    mkdir -p "$IMAGE_DIR"

    log "the image's root filesystem (izhub $version, files dated $created)"
    image_rootfs "$IMAGE_DIR/staging" "$epoch"
    tar --sort=name --format=gnu --numeric-owner --mtime="@$epoch" \
        -cf "$IMAGE_DIR/rootfs.tar" -C "$IMAGE_DIR/staging" .
    rm -rf "$IMAGE_DIR/staging"

    # The archive as `docker save` writes it: manifest.json, the configuration
    # named by its SHA-256 (the image id) and the layer by its own (the diff id).
    log "Docker archive: $archive"
    rm -rf "$IMAGE_DIR/archive" "$IMAGE_DIR/izhub.oci.tar" && mkdir -p "$IMAGE_DIR/archive"
    layer=$(sha256sum <"$IMAGE_DIR/rootfs.tar" | cut -d' ' -f1)
    mv "$IMAGE_DIR/rootfs.tar" "$IMAGE_DIR/archive/$layer.tar"
    image_config "$version" "$revision" "$created" "sha256:$layer" > "$IMAGE_DIR/archive/config.json"
    id=$(sha256sum <"$IMAGE_DIR/archive/config.json" | cut -d' ' -f1)
    mv "$IMAGE_DIR/archive/config.json" "$IMAGE_DIR/archive/$id.json"
    jq -cjn --arg config "$id.json" --arg tag "$IMAGE_NAME:$version" --arg layer "$layer.tar" \
        '[{Config: $config, RepoTags: [$tag], Layers: [$layer]}]' > "$IMAGE_DIR/archive/manifest.json"
    tar --sort=name --format=gnu --numeric-owner --owner=0 --group=0 --mode=u=rw,go=r --mtime="@$epoch" \
        -cf "$archive" -C "$IMAGE_DIR/archive" manifest.json "$id.json" "$layer.tar"
    rm -rf "$IMAGE_DIR/archive"

    log "podman: $IMAGE_NAME:$version loaded from the archive"
    old=$(podman image inspect --format '{{.Id}}' "$IMAGE_NAME:$version" 2>/dev/null || true)
    podman load --quiet -i "$archive" >/dev/null
    podman tag "$IMAGE_NAME:$version" "$IMAGE_NAME:latest"
    loaded=$(podman image inspect --format '{{.Id}}' "$IMAGE_NAME:$version")
    if [ "$loaded" != "$id" ]; then
        echo "dev.sh image: podman loaded $archive as the image $loaded, not $id" >&2
        return 1
    fi
    health=$(podman image inspect --format '{{json .HealthCheck}}' "$IMAGE_NAME:$version")
    if [ "$(jq -cS . <<<"$health")" != "$(tar -xOf "$archive" "$id.json" | jq -cS .config.Healthcheck)" ]; then
        echo "dev.sh image: podman reads the health check $health from $IMAGE_NAME:$version" >&2
        return 1
    fi
    digest=$(podman image inspect --format '{{.Digest}}' "$IMAGE_NAME:$version")
    # The image this one replaces, unless another name or a container still uses it.
    if [ -n "$old" ] && [ "$old" != "$id" ]; then podman rmi "$old" >/dev/null 2>&1 || true; fi

    log "the image's root filesystem, exported to $IMAGE_DIR/rootfs and run as uid $IMAGE_UID (chroot)"
    image_export "$IMAGE_NAME:$version" "$digest" "$id" "$IMAGE_DIR/rootfs"
    image_verify "$IMAGE_DIR/rootfs" "$epoch"

    echo "$digest" > "$IMAGE_DIR/digest"
    log "$IMAGE_NAME:$version (and :latest)"
    echo "digest    $digest"
    echo "image id  sha256:$id"
    echo "health    $health"
    echo "archive   $archive  sha256:$(sha256sum <"$archive" | cut -d' ' -f1)"
    echo "rootfs    $IMAGE_DIR/rootfs"
}

case "${1:-}" in
    demo) demo ;;
    bench-bulk) setup; build_plugins; build_host; trap stop_all EXIT INT TERM; bench_bulk ;;
    test) run_tests ;;
    bench) bench ;;
    bench-cluster) bench_cluster ;;
    bench-console) setup; build_console; build_host; trap stop_all EXIT INT TERM; bench_console ;;
    build) setup; build_plugins; build_guest_plugins; build_console; build_host ;;
    fuzz) fuzz "${2:-600}" ;;
    image) setup; build_plugins; build_console; build_host; image_assemble ;;
    image-only) image_assemble ;;
    *) sed -n '2,15p' "$0"; exit 2 ;;
esac
