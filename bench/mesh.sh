#!/usr/bin/env bash
# bench/mesh.sh: meshguard's two-agent path against a direct call and against
# an nginx mTLS pair, in one run on this machine, with h2load.
#
#   bash bench/mesh.sh                 # 10 s per measurement
#   DURATION=30 bash bench/mesh.sh     # longer runs
#   ONLY=direct,nginx bash bench/mesh.sh
#   ONLY=direct,nginx-edge,edge bash bench/mesh.sh   # the edge comparison (issue 7)
#   MESHGUARD_BIN=/tmp/meshguard-old ONLY=meshguard bash bench/mesh.sh  # a prebuilt binary
#   MODES=1000rps bash bench/mesh.sh   # only the fixed-rate measurement
#   MODES=single bash bench/mesh.sh    # 100 req/s, one at a time: latency with no queueing
#   LOGDIR=/tmp/logs bash bench/mesh.sh  # keep h2load's per-request logs there
#   ROUNDS=3 bash bench/mesh.sh        # every scenario three times, interleaved
#
# Paths measured (client speaks h2c to the first hop in every case):
#   direct:    h2load -> backend (nginx, `return 200`)
#   nginx:     h2load -> nginx A -(mTLS, proxy_ssl, keepalive)-> nginx B (ssl_verify_client on) -> backend
#   meshguard: h2load -> agent web (outbound) -(mTLS, HTTP/2, one connection)-> agent users
#              (inbound, Rego on every request with the shipped policies, audit on) -> backend
#   nginx-edge: h2load -(TLS)-> nginx DMZ (limit_req, rewrite) -(mTLS)-> nginx B -> backend
#   edge:      h2load -(TLS)-> meshguard edge (rate limit, rewrite) -(mTLS)-> agent users -> backend
# Each at max throughput (64 concurrent streams: 4 connections x 16 streams)
# and at a fixed 1000 req/s (4 connections x 250 req/s; h2load sends these
# in bursts of 2-9 requests, so p99 there is how fast a burst is served).
# Prints req/s, p50 and p99 (from h2load's per-request log), each as a ratio
# to direct; meshguard ÷ nginx for each metric, per round and as the median
# over the rounds; and each proxy's peak RSS (VmHWM). Everything listens on
# 127.0.0.1 only.
set -euo pipefail

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ONLY=${ONLY:-direct,nginx,meshguard,nginx-edge,edge}
MODES=${MODES:-max 1000rps}
ROUNDS=${ROUNDS:-1}
case $ROUNDS in ''|*[!0-9]*|0) echo "bench/mesh.sh: ROUNDS must be a positive whole number, not '$ROUNDS'" >&2; exit 2 ;; esac
BASE_PORT=${BASE_PORT:-19000}
root=$(cd "$(dirname "$0")/.." && pwd)

need() { # need COMMAND DEBIAN_PACKAGE
  command -v "$1" >/dev/null 2>&1 && return
  echo "installing $2 (for $1)" >&2
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -qq "$2" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }
  else
    echo "bench/mesh.sh: $1 is missing; install the Debian package $2" >&2; exit 2
  fi
}
need h2load nghttp2-client
need nginx nginx
need openssl openssl
need curl curl
NGINX=$(command -v nginx)

work=$(mktemp -d /tmp/meshguard-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  for conf in "$work"/nginx-*.conf; do
    [ -f "$conf" ] && "$NGINX" -c "$conf" -s quit 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

port() { echo $((BASE_PORT + $1)); }
BACKEND=$(port 0) BACKEND_H2C=$(port 1) NGX_A=$(port 2) NGX_B=$(port 3)
CA=$(port 10) MG_WEB_OUT=$(port 11) MG_WEB_IN=$(port 12) MG_WEB_ADMIN=$(port 13)
MG_USERS_IN=$(port 14) MG_USERS_OUT=$(port 15) MG_USERS_ADMIN=$(port 16)
NGX_EDGE=$(port 4) MG_EDGE=$(port 20) MG_EDGE_IN=$(port 21) MG_EDGE_OUT=$(port 22) MG_EDGE_ADMIN=$(port 23)

wait_http() { # wait_http URL [curl args...]: up to 15 s
  local url=$1; shift
  for _ in $(seq 150); do
    curl -s -o /dev/null --max-time 1 "$@" "$url" && return 0
    sleep 0.1
  done
  echo "bench/mesh.sh: $url did not come up" >&2; exit 1
}

nginx_conf() { # nginx_conf NAME BODY: a standalone nginx instance
  local name=$1 body=$2
  mkdir -p "$work/$name"
  cat >"$work/nginx-$name.conf" <<NGX
worker_processes 2;
pid $work/$name/nginx.pid;
error_log $work/$name/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/$name; proxy_temp_path $work/$name;
  fastcgi_temp_path $work/$name; uwsgi_temp_path $work/$name; scgi_temp_path $work/$name;
  keepalive_requests 1000000;
$body
}
NGX
  "$NGINX" -c "$work/nginx-$name.conf"
}

nginx_rss_kb() { # peak RSS of an nginx instance: master + workers
  local master; master=$(cat "$work/$1/nginx.pid")
  local total=0
  for p in $master $(pgrep -P "$master"); do
    total=$((total + $(awk '/VmHWM/ {print $2}' /proc/$p/status)))
  done
  echo "$total"
}

proc_rss_kb() { awk '/VmHWM/ {print $2}' /proc/$1/status; }

cpu_ticks() { # cpu_ticks PID...: user+system clock ticks of the processes and their threads
  local total=0 p
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] && total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$total"
}

nginx_pids() { # nginx_pids NAME: master and workers of an nginx instance
  local master; master=$(cat "$work/$1/nginx.pid")
  echo "$master $(pgrep -P "$master" | tr '\n' ' ')"
}

# ---------------------------------------------------------------- backend
nginx_conf backend "
  server {
    listen 127.0.0.1:$BACKEND;
    listen 127.0.0.1:$BACKEND_H2C http2;
    location / { return 200 'ok\n'; }
  }"
wait_http "http://127.0.0.1:$BACKEND/"

results=()
measure() { # measure NAME ROUND URL [h2load args...]: one run per mode
  local name=$1 round=$2 url=$3; shift 3
  local log mode
  for mode in $MODES; do
    log="$work/h2load-$name-$mode-r$round.log"
    local load
    case $mode in
    max) load=(-c 4 -m 16) ;;
    1000rps) load=(-c 4 -m 16 --rps 250) ;;
    single) load=(-c 1 -m 1 --rps 100) ;; # one request at a time, no bursts
    *) echo "bench/mesh.sh: unknown mode $mode (want max, 1000rps, single)" >&2; exit 2 ;;
    esac
    # CPU time of the proxies under test during the measured part (after
    # the warm-up): a figure that the machine's other load does not skew
    # the way it skews req/s.
    ( sleep "$WARMUP"; cpu_ticks $cpu_pids >"$work/cpu-$name-$mode-r$round.start" ) &
    local sampler=$!
    h2load "${load[@]}" -D "$DURATION" --warm-up-time "$WARMUP" \
      --log-file "$log" "$@" "$url" >"$work/h2load-$name-$mode-r$round.out" 2>&1 || {
        echo "h2load failed for $name/$mode:"; cat "$work/h2load-$name-$mode-r$round.out"; exit 1; }
    local end_ticks; end_ticks=$(cpu_ticks $cpu_pids)
    wait "$sampler" || true
    local rps failed p50 p99
    rps=$(awk '/^finished in/ {print $4}' "$work/h2load-$name-$mode-r$round.out")
    failed=$(awk '/^requests:/ {for (i=1;i<=NF;i++) if ($(i+1)=="failed,") print $i}' "$work/h2load-$name-$mode-r$round.out")
    # h2load counts a 403 or 502 as a success: every answer must be 2xx.
    non2xx=$(awk '/^status codes:/ {print $5 + $7 + $9}' "$work/h2load-$name-$mode-r$round.out")
    if [ "${non2xx:-0}" != 0 ]; then
      echo "bench/mesh.sh: $name/$mode got $non2xx non-2xx answers:"; grep '^status codes' "$work/h2load-$name-$mode-r$round.out"; exit 1
    fi
    # column 3 is microseconds until the end of the response
    read -r p50 p99 < <(awk -F'\t' '$2 < 400 {print $3}' "$log" | sort -n | awk '{v[NR]=$1} END {
      if (NR==0) {print "nan nan"; exit}
      i50=int(NR*0.50); if (i50<1) i50=1; i99=int(NR*0.99); if (i99<1) i99=1
      printf "%.3f %.3f\n", v[i50]/1000, v[i99]/1000 }')
    local cpu_us
    cpu_us=$(awk -v a="$(cat "$work/cpu-$name-$mode-r$round.start")" -v b="$end_ticks" -v r="$rps" -v d="$DURATION" -v hz="$(getconf CLK_TCK)" \
      'BEGIN { if (r+0 > 0 && b > a) printf "%.1f", (b-a)/hz*1e6/(r*d); else print "-" }')
    results+=("$name $mode $rps $p50 $p99 ${failed:-0} $cpu_us $round")
    if [ -n "${LOGDIR:-}" ]; then mkdir -p "$LOGDIR" && cp "$log" "$LOGDIR/"; fi
  done
}

pki_ready=""
pki() { # certificates for the nginx pair (SPIFFE IDs as URI SANs) and the public edge
  [ -n "$pki_ready" ] && return; pki_ready=1
  d="$work/pki"; mkdir -p "$d"
  openssl ecparam -name prime256v1 -genkey -noout -out "$d/ca.key"
  openssl req -x509 -new -key "$d/ca.key" -subj "/CN=bench root" -days 1 -out "$d/ca.crt" \
    -addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
  for who in web users edge; do
    openssl ecparam -name prime256v1 -genkey -noout -out "$d/$who.key"
    openssl req -new -key "$d/$who.key" -subj "/" -out "$d/$who.csr" 2>/dev/null
    printf 'subjectAltName=URI:spiffe://example.org/svc/%s,DNS:%s.mesh,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=critical,CA:false\n' "$who" "$who" >"$d/$who.ext"
    openssl x509 -req -in "$d/$who.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
      -days 1 -extfile "$d/$who.ext" -out "$d/$who.crt" 2>/dev/null
  done
}

nginx_b_ready=""
nginx_b() { # the mTLS upstream side of the nginx pair: ssl_verify_client on -> backend
  [ -n "$nginx_b_ready" ] && return; nginx_b_ready=1
  pki
  nginx_conf nginx-b "
  upstream backend { server 127.0.0.1:$BACKEND; keepalive 64; }
  server {
    listen 127.0.0.1:$NGX_B ssl http2;
    ssl_certificate $d/users.crt; ssl_certificate_key $d/users.key;
    ssl_client_certificate $d/ca.crt; ssl_verify_client on;
    ssl_protocols TLSv1.3;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection \"\"; }
  }"
}

# the client side of an nginx mTLS hop to nginx B, for an nginx location block
NGX_MTLS_PROXY="proxy_pass https://users_mtls;
      proxy_http_version 1.1; proxy_set_header Connection \"\";
      proxy_ssl_certificate $work/pki/web.crt; proxy_ssl_certificate_key $work/pki/web.key;
      proxy_ssl_trusted_certificate $work/pki/ca.crt; proxy_ssl_verify on; proxy_ssl_name users.mesh;
      proxy_ssl_protocols TLSv1.3; proxy_ssl_session_reuse on;"

mg_ready=""
meshguard_pair() { # CA + registry, the users agent (Rego, audit) and the web agent
  [ -n "$mg_ready" ] && return; mg_ready=1
  mg="$work/meshguard"; mkdir -p "$mg/policy"
  if [ -n "${MESHGUARD_BIN:-}" ]; then # a prebuilt binary, e.g. to compare two builds
    cp "$MESHGUARD_BIN" "$mg/meshguard"
  else
    (cd "$root" && go build -o "$mg/meshguard" .)
  fi
  # The shipped rules, configured for the bench's callers.
  cp "$root"/policies/*.rego "$mg/policy/"
  cat >"$mg/policy/data.json" <<JSON
{"meshguard": {"allowlist": {"users": {
  "web":  [{"methods": ["GET"], "paths": ["/users/*"]}],
  "edge": [{"methods": ["GET"], "paths": ["/users/*"]}]
}}, "deny": [{"reason": "admin endpoints are reserved for the ops service", "paths": ["/admin/**"], "except": ["ops"]}]}}
JSON
  fp=$("$mg/meshguard" ca init --dir "$mg/ca" --trust-domain example.org)
  "$mg/meshguard" ca serve --dir "$mg/ca" --listen "127.0.0.1:$CA" 2>"$mg/ca.log" & pids+=($!)
  wait_http "https://127.0.0.1:$CA/health" --cacert "$mg/ca/root.crt"
  for who in web users edge; do
    "$mg/meshguard" token create --dir "$mg/ca" --spiffe-id "spiffe://example.org/svc/$who" >"$mg/$who.token"
  done
  export MESHGUARD_CA="https://127.0.0.1:$CA" MESHGUARD_CA_FINGERPRINT="$fp" MESHGUARD_POLICY="$mg/policy"
  "$mg/meshguard" agent --service users --token-file "$mg/users.token" --app "127.0.0.1:$BACKEND" \
    --route /users --inbound "127.0.0.1:$MG_USERS_IN" --outbound "127.0.0.1:$MG_USERS_OUT" \
    --admin "127.0.0.1:$MG_USERS_ADMIN" --data-dir "$mg/users" --audit-log "$mg/users-audit.log" \
    2>"$mg/users.log" & users_pid=$!; pids+=($users_pid)
  "$mg/meshguard" agent --service web --token-file "$mg/web.token" --app "127.0.0.1:$BACKEND" \
    --inbound "127.0.0.1:$MG_WEB_IN" --outbound "127.0.0.1:$MG_WEB_OUT" --admin "127.0.0.1:$MG_WEB_ADMIN" \
    --data-dir "$mg/web" --audit-log "$mg/web-audit.log" \
    --peer "users=spiffe://example.org/svc/users@127.0.0.1:$MG_USERS_IN" \
    2>"$mg/web.log" & web_pid=$!; pids+=($web_pid)
  wait_http "http://127.0.0.1:$MG_USERS_ADMIN/readyz"
  wait_http "http://127.0.0.1:$MG_WEB_ADMIN/readyz"
}

IFS=, read -ra scenarios <<<"$ONLY"
# setup SCENARIO: starts what the scenario needs (once; processes shared
# between scenarios are started by the first that needs them) and sets
# target[SCENARIO] (the URL), header[SCENARIO] (a request header, if any),
# cpu[SCENARIO] (the PIDs whose
# CPU time is counted) and rss_of[SCENARIO] (how to read their peak RSS).
declare -A target header cpu rss_of
setup() {
  case $1 in
  direct)
    cpu[direct]=$(nginx_pids backend)
    target[direct]="http://127.0.0.1:$BACKEND_H2C/users/1"
    ;;
  nginx)
    nginx_b
    nginx_conf nginx-a "
  upstream users_mtls { server 127.0.0.1:$NGX_B; keepalive 64; }
  server {
    listen 127.0.0.1:$NGX_A http2;
    location / {
      $NGX_MTLS_PROXY
    }
  }"
    wait_http "http://127.0.0.1:$NGX_A/users/1" --http2-prior-knowledge
    [ "$(curl -s --http2-prior-knowledge "http://127.0.0.1:$NGX_A/users/1")" = ok ] || { echo "nginx pair does not answer"; exit 1; }
    cpu[nginx]="$(nginx_pids nginx-a) $(nginx_pids nginx-b)"
    target[nginx]="http://127.0.0.1:$NGX_A/users/1"
    rss_of[nginx]='nginx-pair $(( $(nginx_rss_kb nginx-a) + $(nginx_rss_kb nginx-b) ))'
    ;;
  meshguard)
    meshguard_pair
    wait_http "http://127.0.0.1:$MG_WEB_OUT/users/1" --http2-prior-knowledge -H "Host: users" --fail
    cpu[meshguard]="$web_pid $users_pid"
    target[meshguard]="http://127.0.0.1:$MG_WEB_OUT/users/1"
    header[meshguard]=":authority: users"
    rss_of[meshguard]='meshguard-pair $(( $(proc_rss_kb $web_pid) + $(proc_rss_kb $users_pid) ))'
    ;;
  nginx-edge)
    # nginx as the DMZ: TLS for outside clients, limit_req (rate high enough
    # that nothing is refused: the limiter still runs), prefix rewrite,
    # proxy_pass over mTLS to nginx B.
    nginx_b
    nginx_conf nginx-edge "
  limit_req_zone \$binary_remote_addr zone=api:10m rate=1000000r/s;
  upstream users_mtls { server 127.0.0.1:$NGX_B; keepalive 64; }
  server {
    listen 127.0.0.1:$NGX_EDGE ssl http2;
    ssl_certificate $d/edge.crt; ssl_certificate_key $d/edge.key;
    location /api/users/ {
      limit_req zone=api burst=280 nodelay;
      rewrite ^/api/users/(.*)\$ /users/\$1 break;
      $NGX_MTLS_PROXY
    }
    location / { return 404; }
  }"
    wait_http "https://127.0.0.1:$NGX_EDGE/api/users/1" --cacert "$d/ca.crt" --fail
    cpu[nginx-edge]="$(nginx_pids nginx-edge) $(nginx_pids nginx-b)"
    target[nginx-edge]="https://127.0.0.1:$NGX_EDGE/api/users/1"
    rss_of[nginx-edge]='nginx-edge+b $(( $(nginx_rss_kb nginx-edge) + $(nginx_rss_kb nginx-b) ))'
    ;;
  edge)
    pki; meshguard_pair
    "$mg/meshguard" edge --service edge --token-file "$mg/edge.token" --app "127.0.0.1:$BACKEND" \
      --inbound "127.0.0.1:$MG_EDGE_IN" --outbound "127.0.0.1:$MG_EDGE_OUT" --admin "127.0.0.1:$MG_EDGE_ADMIN" \
      --data-dir "$mg/edge" --audit-log "$mg/edge-audit.log" \
      --listen "127.0.0.1:$MG_EDGE" --tls-cert "$d/edge.crt" --tls-key "$d/edge.key" \
      --expose /api/users --rewrite /api/users=/users --rate 1000000/s --burst 280 \
      2>"$mg/edge.log" & edge_pid=$!; pids+=($edge_pid)
    wait_http "http://127.0.0.1:$MG_EDGE_ADMIN/readyz"
    wait_http "https://127.0.0.1:$MG_EDGE/api/users/1" --cacert "$d/ca.crt" --fail
    cpu[edge]="$edge_pid $users_pid"
    target[edge]="https://127.0.0.1:$MG_EDGE/api/users/1"
    rss_of[edge]='edge+users-agent $(( $(proc_rss_kb $edge_pid) + $(proc_rss_kb $users_pid) ))'
    ;;
  *) echo "bench/mesh.sh: unknown scenario $1 (want direct, nginx, meshguard, nginx-edge, edge)" >&2; exit 2 ;;
  esac
}
for s in "${scenarios[@]}"; do setup "$s"; done

# Rounds: every scenario once per round, in the order given, so that a
# comparison is between measurements made minutes apart, not a whole run
# apart, and the spread between rounds shows how noisy the machine is.
for round in $(seq "$ROUNDS"); do
  for s in "${scenarios[@]}"; do
    cpu_pids=${cpu[$s]}
    measure "$s" "$round" "${target[$s]}" ${header[$s]:+-H "${header[$s]}"}
  done
done
rss=()
for s in "${scenarios[@]}"; do
  [ -n "${rss_of[$s]:-}" ] && rss+=("$(eval echo "${rss_of[$s]}")")
done

# ---------------------------------------------------------------- report
printf '\n%-10s %-8s %5s %12s %9s %9s %8s %10s %10s %11s\n' path mode round "req/s" "p50 ms" "p99 ms" failed "req/s/dir" "p99/dir" "cpu us/req"
for r in "${results[@]}"; do
  read -r name mode rps p50 p99 failed cpu_us round <<<"$r"
  base=$(printf '%s\n' "${results[@]}" | awk -v m="$mode" -v r="$round" '$1=="direct" && $2==m && $8==r {print $3, $5}')
  read -r brps bp99 <<<"${base:-nan nan}"
  printf '%-10s %-8s %5s %12.0f %9.3f %9.3f %8s %10s %10s %11s\n' "$name" "$mode" "$round" "$rps" "$p50" "$p99" "$failed" \
    "$(awk -v a="$rps" -v b="$brps" 'BEGIN { if (b+0>0) printf "%.2f", a/b; else print "-" }')" \
    "$(awk -v a="$p99" -v b="$bp99" 'BEGIN { if (b+0>0) printf "%.2f", a/b; else print "-" }')" "$cpu_us"
done
echo "(cpu us/req: CPU time of the proxies under test (direct: the backend) per request, after the warm-up)"

# compare MESHGUARD NGINX: each metric as meshguard ÷ nginx within a round,
# the median over the rounds, and in how many rounds meshguard was at least
# as good (req/s higher or equal; latency and CPU lower or equal).
compare() {
  printf '%s\n' "${results[@]}" | awk -v a="$1" -v b="$2" -v modes="$MODES" '
    { key = $2 SUBSEP $8; if ($1 == a) A[key] = $0; if ($1 == b) B[key] = $0; if ($8 > rounds) rounds = $8 }
    function median(v, n,   i, j, t) {
      for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j-1] > v[j]; j--) { t = v[j]; v[j] = v[j-1]; v[j-1] = t }
      return n % 2 ? v[(n+1)/2] : (v[n/2] + v[n/2+1]) / 2
    }
    END {
      nm = split(modes, M, " "); printed = 0
      split("req/s p50 p99 cpu/req", names, " "); split("3 4 5 7", cols, " ")
      for (m = 1; m <= nm; m++) for (k = 1; k <= 4; k++) {
        if (k == 1 && M[m] != "max") continue # a fixed rate: req/s is the rate
        line = ""; n = 0; good = 0
        for (r = 1; r <= rounds; r++) {
          key = M[m] SUBSEP r
          if (!(key in A) || !(key in B)) continue
          split(A[key], x, " "); split(B[key], y, " ")
          if (x[cols[k]] == "-" || y[cols[k]] + 0 <= 0) continue
          v = x[cols[k]] / y[cols[k]]; n++; R[n] = v; line = line sprintf(" %5.2f", v)
          if (k == 1 ? v >= 1 : v <= 1) good++
        }
        if (n == 0) continue
        if (!printed) { printf "\n%s ÷ %s, per round; median; rounds where %s is at least as good\n", a, b, a; printed = 1 }
        printf "  %-8s %-8s%s   median %5.2f   %d/%d\n", M[m], names[k], line, median(R, n), good, n
      }
    }'
}
compare meshguard nginx
compare edge nginx-edge
echo
for r in "${rss[@]}"; do read -r name kb <<<"$r"; printf 'peak RSS %-15s %8.1f MiB\n' "$name" "$(awk -v k="$kb" 'BEGIN {print k/1024}')"; done
