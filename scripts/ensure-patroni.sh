#!/usr/bin/env bash
# Bring up a 3-node Patroni PostgreSQL cluster (scope "bento") on this machine, for the
# high-availability tests: PostgreSQL 15 nodes pg1, pg2, pg3 on 127.0.0.1:5441, 5442,
# 5443 (Patroni REST API on 127.0.0.1:8441, 8442, 8443), a single-node etcd (v3 API) on
# 127.0.0.1:2379 (peer port 2380) as the DCS, and HAProxy routing 127.0.0.1:5440 to the
# leader (check GET /primary) and 127.0.0.1:5439 to the streaming replicas
# (GET /replica, round robin). Superuser postgres, no password: pg_hba trusts
# 127.0.0.1/32 for every user, database and replication. Database "test" exists.
# Dynamic configuration: ttl 20 (Patroni's minimum), loop_wait 2, retry_timeout 5,
# synchronous_mode (one synchronous standby; no acknowledged commit is lost on a
# switchover or failover), use_pg_rewind and use_slots (a failed leader rejoins as a
# replica), failsafe_mode off; replicas are cloned with pg_basebackup --checkpoint=fast.
#
# Idempotent: exits 0 at once (well under 1 s) when everything runs, a leader is
# writable through 5440, both replicas stream from it (one of them the synchronous
# standby recorded in the DCS, without which no failover can happen) and 5439 reaches
# only replicas. Otherwise it installs what is missing (apt: etcd-server, haproxy,
# python3-venv; PyPI: patroni[psycopg3,etcd3] 4.x in the venv /opt/bento-patroni/venv,
# made with Debian's /usr/bin/python3 so that the postgres user can run it), (re)starts
# every daemon that is not running (Patroni recovers its node after a reboot or a
# SIGKILL: crash recovery, pg_rewind, re-clone), creates database "test" if missing,
# applies the dynamic configuration below if the DCS holds another (PATCH /config), and
# waits (default 120 s, ENSURE_PATRONI_TIMEOUT) until the cluster is healthy. Repairs it
# does itself: a node whose Patroni exits with "system ID mismatch" while another node
# leads gets its data directory wiped and is re-cloned; a replica that does not stream
# within 30 s of a leader being up is re-initialised (POST /reinitialize); when all three
# Patronis run but no leader appears within 60 s, or every node's data has a system ID
# other than the DCS's, the whole cluster is wiped (the data directories below and the
# etcd keys /service/bento/) and bootstrapped anew (announced on stderr). It never
# touches the Debian clusters (5432, 5433), /etc/haproxy or other daemons; an etcd
# already answering on 127.0.0.1:2379 is used as it is.
#
# For tests (all paths fixed; N = 1, 2, 3):
#   Patroni pid of node pgN     /var/lib/bento-patroni/pgN/patroni.pid
#   postmaster pid of node pgN  first line of /var/lib/bento-patroni/pgN/data/postmaster.pid
#   data directory              /var/lib/bento-patroni/pgN/data (unix socket in /var/lib/bento-patroni/pgN)
#   configuration               /etc/bento-patroni/pgN.yml, /etc/bento-patroni/haproxy.cfg
#   logs                        /var/log/bento-patroni/pgN/patroni.log (Patroni, rotated),
#                               /var/log/bento-patroni/pgN/postgres.log (PostgreSQL server log
#                               and Patroni start-up errors), /var/log/bento-patroni/etcd.log,
#                               /var/log/bento-patroni/haproxy.log
#   etcd / HAProxy pids         /var/lib/bento-patroni/etcd.pid, /var/lib/bento-patroni/haproxy.pid
# Simulate a hard failure with SIGKILL to a node's Patroni pid and postmaster pid: its
# leader key expires after the ttl (20 s) and the synchronous standby is promoted about
# 20-25 s after the kill; running this script again restarts the killed node, which
# rejoins as a replica (run before the promotion, it restarts the node, which keeps the
# leadership). A postmaster killed alone is restarted in place by its Patroni (no
# failover). Switchover: POST http://127.0.0.1:844N/switchover with {"leader": "pgX"}
# (optionally "candidate"; it must be the synchronous standby); cluster state and roles
# (leader, sync_standby, replica): GET http://127.0.0.1:844N/cluster.
#
# Run as root. Daemons are fully detached (own session, stdin /dev/null, output to the
# logs above; HAProxy closes its output once started), so a caller capturing this
# script's output does not hang. Concurrent runs are serialised with flock. Prints one
# line on success (what it did, if anything, in parentheses); notices (installing,
# wiping) and errors go to stderr, errors with a non-zero exit status.
set -u
umask 022

me=ensure-patroni
die() { echo "$me: $*" >&2; exit 1; }
warn() { echo "$me: $*" >&2; }

SCOPE=bento
NAMESPACE=/service/
HOST=127.0.0.1
NODES=(pg1 pg2 pg3)
PRIMARY_PORT=5440
REPLICA_PORT=5439
ETCD_PORT=2379
ETCD_PEER_PORT=2380
PG_MAJOR=15
PGBIN=/usr/lib/postgresql/$PG_MAJOR/bin
ROOT=/var/lib/bento-patroni
CONF=/etc/bento-patroni
LOGDIR=/var/log/bento-patroni
VENV=/opt/bento-patroni/venv
PATRONI_SPEC='patroni[psycopg3,etcd3]>=4,<5'
TIMEOUT=${ENSURE_PATRONI_TIMEOUT:-120}   # seconds to wait for a healthy cluster
LEADER_GRACE=60                          # seconds without a leader before wiping the cluster
REINIT_AFTER=30                          # seconds a replica may not stream (with a leader) before reinitialize
ETCD_URL=http://$HOST:$ETCD_PORT
PY=/usr/bin/python3
DAEMON_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

pg_port() { echo $((5440 + ${1#pg})); }
api_port() { echo $((8440 + ${1#pg})); }

[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and starts daemons as postgres)"
[ -x "$PY" ] || die "$PY missing (Debian's python3 runs Patroni)"
id postgres >/dev/null 2>&1 || die "no postgres user (is postgresql-$PG_MAJOR installed?)"
{ [ -x "$PGBIN/postgres" ] && [ -x "$PGBIN/psql" ]; } || die "$PGBIN/postgres missing (postgresql-$PG_MAJOR not installed?)"
# the caller's Python and libpq settings must not leak into Patroni, pip or psql
unset PYTHONPATH PYTHONHOME PGHOST PGHOSTADDR PGPORT PGDATABASE PGUSER PGOPTIONS PGSERVICE PGSSLMODE
export PGCONNECT_TIMEOUT=3

as_pg() { (cd / && setpriv --reuid=postgres --regid=postgres --init-groups \
    env HOME=/var/lib/postgresql USER=postgres LOGNAME=postgres "$@"); }
psql_at() {  # port, database, sql: one row per line, fields separated by |
    "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$HOST" -p "$1" -U postgres -d "$2" -c "$3"
}
psql_each() {  # port, count, sql: the query in database test on that many successive
    # connections (HAProxy's round robin then reaches every server it considers up)
    local args=(-c "$3") i
    for ((i = 1; i < $2; i++)); do args+=(-c '\connect' -c "$3"); done
    "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$HOST" -p "$1" -U postgres -d test "${args[@]}"
}

# Serialise concurrent runs (two test sessions starting together).
mkdir -p "$ROOT" || die "cannot create $ROOT"
exec 9>>"$ROOT/ensure-patroni.lock" && { flock -w 600 9 || die "another ensure-patroni run holds $ROOT/ensure-patroni.lock"; }

# ---- desired configuration ---------------------------------------------------------------
# bootstrap.dcs, also compared with GET /config and applied with PATCH /config when it differs
DCS_JSON='{"ttl": 20, "loop_wait": 2, "retry_timeout": 5, "maximum_lag_on_failover": 1048576,
    "synchronous_mode": true, "failsafe_mode": false,
    "postgresql": {"use_pg_rewind": true, "use_slots": true,
      "parameters": {"max_connections": 100, "shared_buffers": "32MB", "wal_level": "replica",
        "hot_standby": "on", "hot_standby_feedback": "on", "wal_keep_size": "128MB",
        "max_wal_senders": 10, "max_replication_slots": 10, "wal_log_hints": "on",
        "wal_receiver_status_interval": "1s"}}}'

patroni_yml() {  # node
    local n=$1
    cat <<EOF
# Written by scripts/ensure-patroni.sh on every run; local edits are lost.
scope: $SCOPE
namespace: $NAMESPACE
name: $n
log:
  level: INFO
  dir: $LOGDIR/$n
  file_size: 10485760
  file_num: 3
restapi:
  listen: $HOST:$(api_port "$n")
  connect_address: $HOST:$(api_port "$n")
etcd3:
  hosts: $HOST:$ETCD_PORT
bootstrap:
  dcs: $(tr -s ' \n' ' ' <<<"$DCS_JSON")
  initdb:
  - encoding: UTF8
  - locale: C.UTF-8
postgresql:
  listen: $HOST:$(pg_port "$n")
  connect_address: $HOST:$(pg_port "$n")
  data_dir: $ROOT/$n/data
  bin_dir: $PGBIN
  pgpass: $ROOT/$n/pgpass
  authentication:
    superuser:
      username: postgres
    replication:
      username: postgres
    rewind:
      username: postgres
  parameters:
    unix_socket_directories: $ROOT/$n
  pg_hba:
  - local all all trust
  - host all all 127.0.0.1/32 trust
  - host replication all 127.0.0.1/32 trust
  create_replica_methods:
  - basebackup
  basebackup:
  - checkpoint: fast
  remove_data_directory_on_rewind_failure: true
  remove_data_directory_on_diverged_timelines: true
EOF
}

haproxy_listen() {  # name, port, Patroni check path, extra line (or "")
    local n
    printf '\nlisten %s_%s\n    bind %s:%s\n' "$SCOPE" "$1" "$HOST" "$2"
    [ -z "$4" ] || printf '    %s\n' "$4"
    cat <<EOF
    option httpchk GET $3
    http-check expect status 200
    default-server inter 1s fastinter 250ms downinter 500ms rise 1 fall 2 on-marked-down shutdown-sessions
EOF
    for n in "${NODES[@]}"; do
        echo "    server $n $HOST:$(pg_port "$n") check port $(api_port "$n")"
    done
}

haproxy_cfg() {
    cat <<EOF
# Written by scripts/ensure-patroni.sh on every run; local edits are lost.
# Started as: haproxy -D -f $CONF/haproxy.cfg -p $ROOT/haproxy.pid
global
    maxconn 1000

defaults
    mode tcp
    retries 2
    timeout connect 3s
    timeout client 30m
    timeout server 30m
    timeout check 2s
EOF
    haproxy_listen primary "$PRIMARY_PORT" /primary ""
    haproxy_listen replicas "$REPLICA_PORT" /replica "balance roundrobin"
}

declare -A want_file
for n in "${NODES[@]}"; do want_file[$CONF/$n.yml]=$(patroni_yml "$n"); done
want_file[$CONF/haproxy.cfg]=$(haproxy_cfg)
conf_current() {  # file...
    local f
    for f in "$@"; do [ "$(cat "$f" 2>/dev/null)" = "${want_file[$f]}" ] || return 1; done
}

# ---- helpers: JSON over HTTP (Patroni REST API, etcd's v3 JSON gateway) -----------------
PYHELP='
import json, sys, urllib.request, urllib.error, base64

def call(url, data=None, method=None, timeout=1.5):
    req = urllib.request.Request(url, method=method,
                                 data=None if data is None else json.dumps(data).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except Exception as e:
        return None, str(e).encode()

def subset(want, have):
    if isinstance(want, dict):
        return isinstance(have, dict) and all(k in have and subset(v, have[k]) for k, v in want.items())
    return want == have or str(want).lower() == str(have).lower()

cmd = sys.argv[1]
if cmd == "probe":  # etcd_url name=api_port,... dcs_json
    etcd, nodes, want = sys.argv[2], sys.argv[3].split(","), json.loads(sys.argv[4])
    code, body = call(etcd + "/health")
    try:
        ok = code == 200 and json.loads(body).get("health") in (True, "true")
    except ValueError:
        ok = False
    print("etcd", "ok" if ok else "down")
    config = "unknown"
    for item in filter(None, nodes):
        name, port = item.split("=")
        code, body = call("http://127.0.0.1:%s/patroni" % port)
        try:
            d = json.loads(body) if code == 200 else None
        except ValueError:
            d = None
        if not d:
            print("node", name, "down", "-", "-")
            continue
        role = {"master": "primary"}.get(d.get("role"), d.get("role") or "-")
        print("node", name, d.get("state") or "-", role, d.get("replication_state") or "-")
        if config == "unknown":
            code, body = call("http://127.0.0.1:%s/config" % port)
            if code == 200:
                try:
                    config = "ok" if subset(want, json.loads(body)) else "differs"
                except ValueError:
                    pass
            code, body = call("http://127.0.0.1:%s/cluster" % port)
            try:
                members = json.loads(body)["members"] if code == 200 else []
            except (ValueError, KeyError, TypeError):
                members = []
            for m in members:
                if m.get("role") in ("sync_standby", "quorum_standby"):
                    print("sync", m.get("name"))
    print("config", config)
elif cmd == "patch":  # api_url dcs_json
    code, body = call(sys.argv[2] + "/config", json.loads(sys.argv[3]), "PATCH", 10)
    sys.exit(0 if code == 200 else "PATCH /config: %s %s" % (code, body.decode(errors="replace")))
elif cmd == "reinit":  # api_url
    code, body = call(sys.argv[2] + "/reinitialize", {"force": True}, "POST", 10)
    sys.exit(0 if code == 200 else "POST /reinitialize: %s %s" % (code, body.decode(errors="replace")))
elif cmd == "dcs-wipe":  # etcd_url prefix
    p = sys.argv[3].encode()
    end = p[:-1] + bytes([p[-1] + 1])
    b64 = lambda b: base64.b64encode(b).decode()
    code, body = call(sys.argv[2] + "/v3/kv/deleterange", {"key": b64(p), "range_end": b64(end)}, "POST", 10)
    sys.exit(0 if code == 200 else "etcd deleterange: %s %s" % (code, body.decode(errors="replace")))
'
py() { "$PY" -c "$PYHELP" "$@"; }

node_list=$(for n in "${NODES[@]}"; do printf '%s=%s,' "$n" "$(api_port "$n")"; done)
node_list=${node_list%,}

# probe: fills ETCD_OK, CONFIG_STATE, STATE/ROLE/REPL per node, LEADER, STREAMING and SYNC
# (the synchronous standby recorded in the DCS: only it may be promoted on a failover)
declare -A STATE ROLE REPL
probe() {
    local kind a b c d
    ETCD_OK=false CONFIG_STATE=unknown LEADER="" STREAMING=() SYNC=""
    while read -r kind a b c d; do
        case "$kind" in
        etcd) [ "$a" = ok ] && ETCD_OK=true ;;
        config) CONFIG_STATE=$a ;;
        sync) SYNC=$a ;;
        node) STATE[$a]=$b ROLE[$a]=$c REPL[$a]=$d ;;
        esac
    done < <(py probe "$ETCD_URL" "$node_list" "$DCS_JSON" 2>/dev/null)
    for n in "${NODES[@]}"; do
        if [ "${STATE[$n]:-down}" = running ] && [ "${ROLE[$n]}" = primary ]; then
            [ -z "$LEADER" ] && LEADER=$n || LEADER=many
        elif [ "${STATE[$n]:-down}" = running ] && [ "${ROLE[$n]}" = replica ] && [ "${REPL[$n]}" = streaming ]; then
            STREAMING+=("$n")
        fi
    done
    [ "$LEADER" = many ] && LEADER=""
    return 0
}

all_nodes_up() {  # every Patroni runs and answers (then a missing leader is the cluster's state, not a dead daemon)
    local n
    for n in "${NODES[@]}"; do
        patroni_alive "$n" && [ "${STATE[$n]:-down}" != down ] || return 1
    done
}
pid_alive() {  # pidfile, text the process's command line contains
    local pid
    pid=$(cat "$1" 2>/dev/null) && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null &&
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$2"
}
patroni_alive() { pid_alive "$ROOT/$1/patroni.pid" "bin/patroni $CONF/$1.yml"; }
etcd_ours_alive() { pid_alive "$ROOT/etcd.pid" "--data-dir $ROOT/etcd"; }
haproxy_alive() { pid_alive "$ROOT/haproxy.pid" "$CONF/haproxy.cfg"; }

# The whole cluster as the tests use it: every daemon alive, one leader writable through
# 5440 with both replicas streaming from it (one synchronous), 5439 reaching only replicas,
# database test present.
healthy() {
    local n
    $ETCD_OK && [ -n "$LEADER" ] && [ ${#STREAMING[@]} -eq 2 ] && [ "$CONFIG_STATE" = ok ] || return 1
    [[ " ${STREAMING[*]} " == *" $SYNC "* ]] || return 1  # a failover needs a synchronous standby
    for n in "${NODES[@]}"; do patroni_alive "$n" || return 1; done
    haproxy_alive || return 1
    local want
    want="f|$(pg_port "$LEADER")|2"
    [ "$(psql_each "$PRIMARY_PORT" 3 "select pg_is_in_recovery(), inet_server_port(),
        (select count(*) from pg_stat_replication where state = 'streaming')" 2>/dev/null)" = "$want
$want
$want" ] || return 1
    [ "$(psql_each "$REPLICA_PORT" 3 "select pg_is_in_recovery()" 2>/dev/null)" = "t
t
t" ]
}

summary() {
    local others=() n
    for n in "${NODES[@]}"; do [ "$n" = "$LEADER" ] || others+=("$n"); done
    echo "cluster $SCOPE up: leader $LEADER ($(pg_port "$LEADER")), replicas ${others[*]} streaming (sync $SYNC); haproxy $PRIMARY_PORT (primary) $REPLICA_PORT (replicas)"
}

# ---- fast path: everything up -----------------------------------------------------------
probe
if conf_current "${!want_file[@]}" && healthy; then
    echo "$me: $(summary)"
    exit 0
fi

started_at=$SECONDS
notes=()
note() {  # message, once
    local m
    for m in "${notes[@]}"; do [ "$m" = "$1" ] && return 0; done
    notes+=("$1")
}
tmplog=$(mktemp)
trap 'rm -f "$tmplog"' EXIT
run() {  # command...: run quietly, show its output if it fails
    "$@" 9>&- >"$tmplog" 2>&1 && return 0
    local rc=$?
    warn "failed ($rc): $*"
    sed 's/^/    /' "$tmplog" >&2
    return $rc
}

# ---- packages and the Patroni venv --------------------------------------------------------
apt_install() {  # package...
    command -v apt-get >/dev/null 2>&1 || die "$* missing and no apt-get to install it"
    warn "installing $* (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq -o DPkg::Lock::Timeout=300 "$@" >"$tmplog" 2>&1 9>&- ||
        { run apt-get update -qq && run apt-get install -y -qq -o DPkg::Lock::Timeout=300 "$@"; } ||
        die "could not install $*"
    note "installed $*"
}
pkgs=()
[ -x /usr/bin/etcd ] || pkgs+=(etcd-server)
[ -x /usr/sbin/haproxy ] || pkgs+=(haproxy)
[ ${#pkgs[@]} -eq 0 ] || apt_install "${pkgs[@]}"
[ -x /usr/bin/etcd ] || die "/usr/bin/etcd missing after installing etcd-server"
[ -x /usr/sbin/haproxy ] || die "/usr/sbin/haproxy missing after installing haproxy"

venv_ok() {  # as postgres, as Patroni runs
    as_pg "$VENV/bin/python" -c 'import patroni.dcs.etcd3, psycopg' >/dev/null 2>&1 &&
        as_pg "$VENV/bin/patroni" --version 2>/dev/null | grep -q '^patroni 4\.'
}
if ! venv_ok; then
    warn "installing $PATRONI_SPEC into $VENV (pip)"
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")" && chmod 755 "$(dirname "$VENV")"
    if ! "$PY" -m venv "$VENV" >/dev/null 2>&1; then
        rm -rf "$VENV"
        dpkg -s python3-venv >/dev/null 2>&1 || apt_install python3-venv
        run "$PY" -m venv "$VENV" || die "cannot create the venv $VENV with $PY"
    fi
    run "$VENV/bin/pip" install -q "$PATRONI_SPEC" || die "pip install $PATRONI_SPEC failed"
    venv_ok || die "$VENV/bin/patroni (4.x) does not run as postgres"
    note "installed $("$VENV/bin/patroni" --version 2>/dev/null) in $VENV"
fi

# ---- directories and configuration ------------------------------------------------------
{ mkdir -p "$CONF" "$LOGDIR" "$ROOT/etcd" && chmod 700 "$ROOT/etcd"; } || die "cannot create $CONF, $LOGDIR or $ROOT/etcd"
for n in "${NODES[@]}"; do
    install -d -o postgres -g postgres -m 755 "$ROOT/$n" "$LOGDIR/$n" || die "cannot create $ROOT/$n"
    [ -e "$LOGDIR/$n/postgres.log" ] || install -o postgres -g postgres -m 640 /dev/null "$LOGDIR/$n/postgres.log"
done
changed=()
for f in "${!want_file[@]}"; do
    conf_current "$f" && continue
    { printf '%s\n' "${want_file[$f]}" >"$f.tmp" && mv -f "$f.tmp" "$f"; } || die "cannot write $f"
    changed+=("$f")
done
for f in "${changed[@]}"; do
    case "$f" in
    */haproxy.cfg)
        run /usr/sbin/haproxy -c -q -f "$f" || die "$f is not valid"
        if haproxy_alive; then  # reload: a new process takes over the ports
            (cd / && exec setsid /usr/sbin/haproxy -D -f "$f" -p "$ROOT/haproxy.pid" -sf "$(cat "$ROOT/haproxy.pid")") \
                </dev/null >>"$LOGDIR/haproxy.log" 2>&1 9>&- || die "haproxy reload failed (see $LOGDIR/haproxy.log)"
            note "reloaded haproxy"
        fi ;;
    *.yml)
        n=$(basename "$f" .yml)
        if patroni_alive "$n"; then kill -HUP "$(cat "$ROOT/$n/patroni.pid")" && note "reloaded $n"; fi ;;
    esac
done

# ---- daemons ----------------------------------------------------------------------------
spawn() {  # pidfile, logfile, user, command...: start detached, the process writes its pid
    local pidfile=$1 log=$2 user=$3; shift 3
    local as=() home=/root
    if [ "$user" != root ]; then
        as=(setpriv --reuid="$user" --regid="$user" --init-groups)
        home=$(getent passwd "$user" | cut -d: -f6)
    fi
    rm -f "$pidfile"
    # shellcheck disable=SC2016  # $$ and $@ belong to the inner sh
    (cd / && exec setsid env -i PATH="$DAEMON_PATH" HOME="$home" USER="$user" LOGNAME="$user" LANG=C.UTF-8 \
        sh -c 'echo $$ >"$0" && exec "$@"' "$pidfile" "${as[@]}" "$@") </dev/null >>"$log" 2>&1 9>&- &
    for _ in $(seq 1 50); do [ -s "$pidfile" ] && return 0; sleep 0.05; done
    warn "no pid in $pidfile after starting $*"
    return 1
}

adopt() {  # pidfile, pgrep pattern: find a running process not recorded in its pid file
    local pid
    pid=$(pgrep -o -f -- "$2") || return 1
    echo "$pid" >"$1"
}

ensure_etcd() {
    etcd_ours_alive && return 0
    adopt "$ROOT/etcd.pid" "etcd .*--data-dir $ROOT/etcd" && return 0
    if py probe "$ETCD_URL" "" '{}' 2>/dev/null | grep -qx 'etcd ok'; then
        foreign_etcd=true
        note "using the etcd on $HOST:$ETCD_PORT not started here"
        return 0
    fi
    spawn "$ROOT/etcd.pid" "$LOGDIR/etcd.log" root /usr/bin/etcd --name "$SCOPE-etcd" --data-dir "$ROOT/etcd" \
        --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
        --listen-peer-urls "http://$HOST:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://$HOST:$ETCD_PEER_PORT" \
        --initial-cluster "$SCOPE-etcd=http://$HOST:$ETCD_PEER_PORT" --initial-cluster-state new \
        --initial-cluster-token "$SCOPE-etcd" --logger zap --log-outputs stderr \
        --auto-compaction-mode periodic --auto-compaction-retention 1h --snapshot-count 10000 || return 1
    note "started etcd"
    for _ in $(seq 1 100); do
        py probe "$ETCD_URL" "" '{}' 2>/dev/null | grep -qx 'etcd ok' && return 0
        etcd_ours_alive || break
        sleep 0.1
    done
    warn "etcd did not become healthy; $LOGDIR/etcd.log:"
    tail -n 15 "$LOGDIR/etcd.log" | sed 's/^/    /' >&2
    return 1
}

start_patroni() {  # node
    local n=$1
    patroni_alive "$n" && return 0
    adopt "$ROOT/$n/patroni.pid" "bin/patroni $CONF/$n.yml" && return 0
    log_mark[$n]="$(stat -c %s "$LOGDIR/$n/patroni.log" 2>/dev/null || echo 0) $(stat -c %s "$LOGDIR/$n/postgres.log" 2>/dev/null || echo 0)"
    spawn "$ROOT/$n/patroni.pid" "$LOGDIR/$n/postgres.log" postgres "$VENV/bin/patroni" "$CONF/$n.yml" || return 1
    note "started $n"
}

ensure_haproxy() {
    haproxy_alive && return 0
    adopt "$ROOT/haproxy.pid" "haproxy .*-f $CONF/haproxy.cfg" && return 0
    run /usr/sbin/haproxy -c -q -f "$CONF/haproxy.cfg" || return 1
    (cd / && exec setsid /usr/sbin/haproxy -D -f "$CONF/haproxy.cfg" -p "$ROOT/haproxy.pid") \
        </dev/null >>"$LOGDIR/haproxy.log" 2>&1 9>&- || { tail -n 5 "$LOGDIR/haproxy.log" >&2; return 1; }
    note "started haproxy"
}

postmaster_stop() {  # node: immediate stop of a postmaster left running on the node's data directory
    local d=$ROOT/$1/data
    [ -f "$d/postmaster.pid" ] || return 0
    as_pg "$PGBIN/pg_ctl" status -D "$d" >/dev/null 2>&1 || return 0
    run as_pg "$PGBIN/pg_ctl" stop -D "$d" -m immediate -w -t 30
}

stop_patroni() {  # node: Patroni (which stops PostgreSQL), then whatever is left
    local n=$1 pid
    if patroni_alive "$n"; then
        pid=$(cat "$ROOT/$n/patroni.pid")
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$ROOT/$n/patroni.pid"
    postmaster_stop "$n"
}

wipe_node() {  # node: its data is not from this cluster; clone it again from the leader
    local n=$1
    warn "node $n: data directory $ROOT/$n/data belongs to another cluster (system ID mismatch); wiping it to re-clone from $LEADER"
    stop_patroni "$n"
    rm -rf "$ROOT/$n/data"
    note "wiped and re-cloned $n"
}

wipe_cluster() {  # reason
    warn "WIPING cluster $SCOPE ($1): stopping pg1-pg3, deleting $ROOT/pg{1,2,3}/data and the etcd keys $NAMESPACE$SCOPE/, bootstrapping anew"
    local n
    for n in "${NODES[@]}"; do stop_patroni "$n"; done
    py dcs-wipe "$ETCD_URL" "$NAMESPACE$SCOPE/" || die "cannot delete the etcd keys $NAMESPACE$SCOPE/"
    for n in "${NODES[@]}"; do rm -rf "$ROOT/$n/data"; done
    note "wiped and re-bootstrapped the cluster ($1)"
}

log_has() {  # node, extended regex: in what the node logged since this run started its Patroni
    local a b
    read -r a b <<<"${log_mark[$1]:-0 0}"
    # a log rotated since is read from its start
    [ "$(stat -c %s "$LOGDIR/$1/patroni.log" 2>/dev/null || echo 0)" -ge "$a" ] || a=0
    { tail -c +$((a + 1)) "$LOGDIR/$1/patroni.log"; tail -c +$((b + 1)) "$LOGDIR/$1/postgres.log"; } 2>/dev/null |
        grep -Eq -- "$2"
}

report_failure() {  # message
    local n
    warn "$1"
    {
        echo "    etcd: $($ETCD_OK && echo healthy || echo down)"
        for n in "${NODES[@]}"; do
            echo "    $n: patroni $(patroni_alive "$n" && echo running || echo "not running"), state ${STATE[$n]:-down}, role ${ROLE[$n]:--}, replication ${REPL[$n]:--}"
        done
        echo "    haproxy: $(haproxy_alive && echo running || echo "not running")"
        for n in "${NODES[@]}"; do
            echo "    --- tail of $LOGDIR/$n/patroni.log"
            tail -n 8 "$LOGDIR/$n/patroni.log" 2>/dev/null | sed 's/^/    /'
            echo "    --- tail of $LOGDIR/$n/postgres.log"
            tail -n 8 "$LOGDIR/$n/postgres.log" 2>/dev/null | sed 's/^/    /'
        done
        echo "    --- tail of $LOGDIR/etcd.log"
        tail -n 5 "$LOGDIR/etcd.log" 2>/dev/null | sed 's/^/    /'
    } >&2
    exit 1
}

# ---- bring up and wait ------------------------------------------------------------------
declare -A starts=() not_streaming_since=() reinitialised=() wiped=() log_mark=()
foreign_etcd=false
deadline=$((SECONDS + TIMEOUT))
leaderless_since=$SECONDS
cluster_wiped=false
etcd_starts=0
haproxy_starts=0
have_testdb=false
patched=false
while :; do
    if ! $ETCD_OK || ! { etcd_ours_alive || $foreign_etcd; }; then
        if [ $etcd_starts -lt 3 ]; then
            etcd_starts=$((etcd_starts + 1))
            ensure_etcd || warn "etcd is not running (attempt $etcd_starts)"
        fi
    fi
    # a Patroni started here that exited with "system ID mismatch" has data from another
    # cluster: with a leader it is wiped and re-cloned; when every node is in that state
    # (the DCS belongs to another cluster), the whole cluster is wiped
    mismatched=()
    for n in "${NODES[@]}"; do
        if [ "${starts[$n]:-0}" -gt 0 ] && [ -z "${wiped[$n]:-}" ] && ! patroni_alive "$n" &&
            log_has "$n" 'system ID mismatch'; then
            mismatched+=("$n")
        fi
    done
    if [ ${#mismatched[@]} -eq ${#NODES[@]} ] && ! $cluster_wiped; then
        cluster_wiped=true
        wipe_cluster "every node's data has a system ID other than the DCS's"
        leaderless_since=$SECONDS
        deadline=$((SECONDS + TIMEOUT))
        have_testdb=false
        starts=() wiped=() mismatched=()
    fi
    for n in "${NODES[@]}"; do
        patroni_alive "$n" && continue
        if [[ " ${mismatched[*]} " == *" $n "* ]]; then
            [ -n "$LEADER" ] || continue  # wait for a leader to clone from
            wiped[$n]=1
            wipe_node "$n"
        fi
        [ "${starts[$n]:-0}" -lt 4 ] || continue
        starts[$n]=$((${starts[$n]:-0} + 1))
        start_patroni "$n" || warn "cannot start Patroni for $n"
    done
    if [ $haproxy_starts -lt 3 ] && ! haproxy_alive; then
        haproxy_starts=$((haproxy_starts + 1))
        ensure_haproxy || warn "haproxy is not running (attempt $haproxy_starts)"
    fi

    probe
    if [ -n "$LEADER" ]; then
        leaderless_since=$SECONDS
        if ! $have_testdb; then
            exists=$(psql_at "$(pg_port "$LEADER")" postgres "select 1 from pg_database where datname = 'test'" 2>/dev/null)
            if [ "$exists" = 1 ]; then
                have_testdb=true
            elif [ -z "$exists" ] && PGOPTIONS='-c synchronous_commit=local' \
                psql_at "$(pg_port "$LEADER")" postgres "create database test" >/dev/null 2>&1; then
                have_testdb=true
                note "created database test"
            fi
        fi
        if [ "$CONFIG_STATE" = differs ] && ! $patched; then
            patched=true
            run py patch "http://$HOST:$(api_port "$LEADER")" "$DCS_JSON" && note "updated the dynamic configuration"
        fi
        for n in "${NODES[@]}"; do
            if [ "$n" = "$LEADER" ] || [[ " ${STREAMING[*]} " == *" $n "* ]] || ! patroni_alive "$n"; then
                unset "not_streaming_since[$n]"
                continue
            fi
            : "${not_streaming_since[$n]:=$SECONDS}"
            if [ $((SECONDS - not_streaming_since[$n])) -ge $REINIT_AFTER ] && [ -z "${reinitialised[$n]:-}" ]; then
                reinitialised[$n]=1
                warn "node $n: not streaming ${REINIT_AFTER}s after $LEADER leads (state ${STATE[$n]:-down}); reinitialising it"
                run py reinit "http://$HOST:$(api_port "$n")" && note "reinitialised $n"
            fi
        done
    elif [ $((SECONDS - leaderless_since)) -ge $LEADER_GRACE ] && ! $cluster_wiped && $ETCD_OK && all_nodes_up; then
        cluster_wiped=true
        wipe_cluster "no leader after ${LEADER_GRACE}s"
        leaderless_since=$SECONDS
        deadline=$((SECONDS + TIMEOUT))
        have_testdb=false
        starts=() wiped=()
        continue
    fi

    if healthy; then
        extra="waited"
        if [ ${#notes[@]} -gt 0 ]; then
            extra=$(IFS=';'; echo "${notes[*]}")
            extra=${extra//;/; }
        fi
        extra=" ($extra; $((SECONDS - started_at))s)"
        echo "$me: $(summary)$extra"
        exit 0
    fi
    [ $SECONDS -lt $deadline ] || report_failure "cluster $SCOPE not healthy after ${TIMEOUT}s (leader: ${LEADER:-none}, streaming: ${STREAMING[*]:-none}, synchronous standby: ${SYNC:-none})"
    sleep 0.5
done
