#!/usr/bin/env bash
# Bring up a hot-standby streaming replica of the local PostgreSQL (127.0.0.1:5432)
# on 127.0.0.1:5433, for the read-replica tests. The replica is the Debian cluster
# <major>/replica (pg_createcluster layout, so `pg_ctlcluster <major> replica stop|start`
# works), its data directory made with `pg_basebackup -R` through the physical
# replication slot "replica_5433".
#
# Idempotent: exits 0 at once when the replica already streams; starts it when it is
# stopped; (re)creates it when it is missing, broken, not a standby of the current
# primary (different system identifier), or its slot lost the WAL it needs.
# The primary is never stopped or restarted. Its pg_hba.conf gets a
# `host replication postgres 127.0.0.1/32 trust` line if replication connections are
# refused, and max_slot_wal_keep_size is capped (ALTER SYSTEM) if it is unlimited;
# both are applied with a reload. A setting that would need a primary restart
# (wal_level=minimal, max_wal_senders=0, max_replication_slots=0) is reported instead.
#
# Needs the primary running (scripts/ensure-services.sh) and root (the postgres user
# can only start an existing replica: /var/lib/postgresql/<major> is root-owned).
# Prints one line on success; errors go to stderr with a non-zero exit status.
set -u

PRIMARY_PORT=5432
REPLICA_PORT=5433
HOST=127.0.0.1
CLUSTER=replica
SLOT=replica_5433
SLOT_WAL_LIMIT=1GB                             # max_slot_wal_keep_size set on the primary
TIMEOUT=${ENSURE_REPLICA_TIMEOUT:-60}          # seconds to wait for streaming
CONF_NAME=90-ensure-replica.conf               # in /etc/postgresql/<major>/replica/conf.d

me=ensure-replica
die() { echo "$me: $*" >&2; exit 1; }

if [ "$(id -u)" -eq 0 ]; then
    as_pg() { (cd / && runuser -u postgres -- "$@"); }
elif [ "$(id -un)" = postgres ]; then
    as_pg() { "$@"; }
else
    die "run as root or as the postgres user"
fi
command -v pg_lsclusters >/dev/null 2>&1 && command -v psql >/dev/null 2>&1 ||
    die "postgresql-common / psql not installed"

psql_at() {  # port, sql...: one row per line, fields separated by |
    local port=$1; shift
    local args=()
    for sql in "$@"; do args+=(-c "$sql"); done
    psql -X -q -At -v ON_ERROR_STOP=1 -h "$HOST" -p "$port" -U postgres -d postgres "${args[@]}"
}

# Serialise concurrent runs (two test sessions starting together).
lockdir=/var/run/postgresql
[ -d "$lockdir" ] && [ -w "$lockdir" ] || lockdir=${TMPDIR:-/tmp}
lock=$lockdir/ensure-replica-$REPLICA_PORT.lock
[ -e "$lock" ] || { : >>"$lock" && chmod 0666 "$lock"; } 2>/dev/null
exec 9<"$lock" && { flock -w 300 9 || die "another ensure-replica run holds $lock"; }

pg_isready -q -h "$HOST" -p "$PRIMARY_PORT" ||
    die "the primary does not accept connections on $HOST:$PRIMARY_PORT (run scripts/ensure-services.sh)"

info=$(psql_at "$PRIMARY_PORT" "
    select current_setting('server_version_num')::int / 10000, system_identifier,
           current_setting('wal_level'), current_setting('max_wal_senders'),
           current_setting('max_replication_slots'),
           coalesce(current_setting('max_slot_wal_keep_size', true), ''),
           current_setting('hba_file'),
           current_setting('max_connections'), current_setting('max_worker_processes'),
           current_setting('max_prepared_transactions'),
           current_setting('max_locks_per_transaction')
    from pg_control_system()") || die "cannot query the primary on $HOST:$PRIMARY_PORT as postgres"
IFS='|' read -r VER SYSID WAL_LEVEL MAX_SENDERS MAX_SLOTS SLOT_KEEP HBA_FILE \
    MAX_CONN MAX_WORKERS MAX_PREPARED MAX_LOCKS <<<"$info"
[ "$VER" -ge 12 ] 2>/dev/null || die "PostgreSQL $VER is too old (standby.signal needs 12+)"
PGBIN=/usr/lib/postgresql/$VER/bin
[ -x "$PGBIN/pg_basebackup" ] || die "$PGBIN/pg_basebackup missing (postgresql-$VER not installed?)"
CONFDIR=/etc/postgresql/$VER/$CLUSTER
TAG="$VER/$CLUSTER"

# Replica configuration: rewritten when it differs, so the hot-standby minimums follow
# the primary (a standby refuses to run with max_connections etc. below the primary's).
desired_conf="# Written by scripts/ensure-replica.sh on every run; local edits are lost.
listen_addresses = '$HOST'
port = $REPLICA_PORT
hot_standby = on
# Report the standby's snapshots to the primary so that its vacuum/pruning does not
# cancel replica queries (costs some bloat on the primary while a query or a paused
# replay holds an old snapshot; with the slot, also while the replica is stopped).
hot_standby_feedback = on
# How long replay waits for a conflicting replica query before cancelling it (default).
max_standby_streaming_delay = 30s
max_standby_archive_delay = 30s
# Report replay position to the primary every second (pg_stat_replication.replay_lsn).
wal_receiver_status_interval = 1s
# Must be >= the primary's values; copied from it.
max_connections = $MAX_CONN
max_worker_processes = $MAX_WORKERS
max_wal_senders = $MAX_SENDERS
max_prepared_transactions = $MAX_PREPARED
max_locks_per_transaction = $MAX_LOCKS"

cluster_field() {  # column of `pg_lsclusters` for our cluster: 3 port, 4 status, 6 datadir, 7 log
    pg_lsclusters -h 2>/dev/null | awk -v v="$VER" -v c="$CLUSTER" -v f="$1" '$1 == v && $2 == c { print $f }'
}
cluster_exists() { [ -f "$CONFDIR/postgresql.conf" ]; }
cluster_online() { case "$(cluster_field 4)" in online*) return 0 ;; *) return 1 ;; esac; }
conf_current() {
    [ "$(cat "$CONFDIR/conf.d/$CONF_NAME" 2>/dev/null)" = "$desired_conf" ] &&
        cmp -s "$HBA_FILE" "$CONFDIR/pg_hba.conf"
}

# Streaming from this primary: checked on the replica (wal receiver) and on the primary
# (a walsender in state streaming on our slot).
streaming() {
    pg_isready -q -h "$HOST" -p "$REPLICA_PORT" || return 1
    [ "$(psql_at "$REPLICA_PORT" "
        select pg_is_in_recovery() and w.status = 'streaming' and w.sender_port = $PRIMARY_PORT
               and (select system_identifier from pg_control_system())::text = '$SYSID'
        from pg_stat_wal_receiver w" 2>/dev/null)" = t ] || return 1
    [ "$(psql_at "$PRIMARY_PORT" "
        select count(*) from pg_stat_replication r
        join pg_replication_slots s on s.active_pid = r.pid
        where s.slot_name = '$SLOT' and r.state = 'streaming'" 2>/dev/null)" = 1 ]
}

notes=()
finish() {  # message: resume a replay a test left paused, print one line, exit 0
    if [ "$(psql_at "$REPLICA_PORT" "select pg_is_wal_replay_paused()" 2>/dev/null)" = t ]; then
        psql_at "$REPLICA_PORT" "select pg_wal_replay_resume()" >/dev/null &&
            notes+=("resumed a paused WAL replay")
    fi
    local extra=""
    [ ${#notes[@]} -gt 0 ] && extra=" ($(IFS=';'; echo "${notes[*]}" | sed 's/;/; /g'))"
    echo "$me: $1$extra"
    exit 0
}

# ---- fast path: already running, configured and streaming ----------------------------
if cluster_exists && cluster_online && conf_current && streaming; then
    finish "$TAG on $HOST:$REPLICA_PORT already streaming from $HOST:$PRIMARY_PORT"
fi

# ---- primary prerequisites (reload only, never a restart) -----------------------------
case "$WAL_LEVEL" in replica | logical) ;; *)
    die "primary has wal_level=$WAL_LEVEL; streaming replication needs 'replica' (a primary restart, not done here)" ;;
esac
[ "$MAX_SENDERS" -gt 0 ] || die "primary has max_wal_senders=0; needs > 0 (a primary restart, not done here)"
[ "$MAX_SLOTS" -gt 0 ] || die "primary has max_replication_slots=0; needs > 0 (a primary restart, not done here)"

replication_ok() {
    psql -X -q -At -h "$HOST" -p "$PRIMARY_PORT" -U postgres \
        "dbname=postgres replication=true" -c IDENTIFY_SYSTEM >/dev/null 2>&1
}
if ! replication_ok; then
    hba_line="host    replication     postgres        $HOST/32            trust"
    if ! grep -Eq "^[[:space:]]*host[[:space:]]+replication[[:space:]]+postgres[[:space:]]+$HOST/32[[:space:]]+trust[[:space:]]*$" "$HBA_FILE"; then
        [ -w "$HBA_FILE" ] || die "replication connections refused and $HBA_FILE is not writable"
        [ -z "$(tail -c 1 "$HBA_FILE")" ] || echo >>"$HBA_FILE"
        printf '# streaming replica on %s:%s (scripts/ensure-replica.sh)\n%s\n' \
            "$HOST" "$REPLICA_PORT" "$hba_line" >>"$HBA_FILE"
        notes+=("added '$hba_line' to $HBA_FILE")
    fi
    psql_at "$PRIMARY_PORT" "select pg_reload_conf()" >/dev/null || die "cannot reload the primary"
    for _ in $(seq 1 50); do replication_ok && break; sleep 0.1; done
    replication_ok || die "the primary still refuses replication connections from $HOST as postgres (see $HBA_FILE)"
fi

# A slot keeps WAL for a stopped replica; cap it so a replica left stopped cannot fill
# the disk (past the cap the slot is invalidated and the next run re-creates the replica).
if [ "$SLOT_KEEP" = "-1" ]; then
    psql_at "$PRIMARY_PORT" "alter system set max_slot_wal_keep_size = '$SLOT_WAL_LIMIT'" \
        "select pg_reload_conf()" >/dev/null || die "cannot set max_slot_wal_keep_size on the primary"
    notes+=("primary max_slot_wal_keep_size=$SLOT_WAL_LIMIT")
fi

# ---- replica ----------------------------------------------------------------------------
other=$(pg_lsclusters -h 2>/dev/null | awk -v p="$REPLICA_PORT" -v v="$VER" -v c="$CLUSTER" \
    '$3 == p && !($1 == v && $2 == c) { print $1 "/" $2 }')
[ -z "$other" ] || die "port $REPLICA_PORT is configured for cluster $other; not touching it"

write_conf() {  # returns 0 when something changed
    local changed=1
    if [ "$(cat "$CONFDIR/conf.d/$CONF_NAME" 2>/dev/null)" != "$desired_conf" ]; then
        as_pg mkdir -p "$CONFDIR/conf.d"
        printf '%s\n' "$desired_conf" | as_pg tee "$CONFDIR/conf.d/$CONF_NAME" >/dev/null ||
            die "cannot write $CONFDIR/conf.d/$CONF_NAME"
        changed=0
    fi
    if ! cmp -s "$HBA_FILE" "$CONFDIR/pg_hba.conf"; then  # same (trust) rules as the primary
        as_pg tee "$CONFDIR/pg_hba.conf" <"$HBA_FILE" >/dev/null || die "cannot write $CONFDIR/pg_hba.conf"
        changed=0
    fi
    return $changed
}

datadir_ok() {  # a standby of this primary, set up by us, whose slot still has its WAL
    local d sysid slot_state
    d=$(cluster_field 6)
    [ -n "$d" ] && [ "$(cat "$d/PG_VERSION" 2>/dev/null)" = "$VER" ] && [ -f "$d/standby.signal" ] || return 1
    grep -q "^primary_slot_name = '$SLOT'" "$d/postgresql.auto.conf" 2>/dev/null || return 1
    sysid=$(LC_ALL=C as_pg "$PGBIN/pg_controldata" -D "$d" 2>/dev/null |
        sed -n 's/^Database system identifier: *//p')
    [ "$sysid" = "$SYSID" ] || return 1
    slot_state=$(psql_at "$PRIMARY_PORT" "select restart_lsn is not null and coalesce(wal_status, '') <> 'lost'
        from pg_replication_slots where slot_name = '$SLOT' and slot_type = 'physical'" 2>/dev/null)
    [ "$slot_state" = t ]
}

tmplog=$(mktemp)
trap 'rm -f "$tmplog"' EXIT
run() {  # command...: run quietly, show its output if it fails
    # 9<&-: the server started here must not inherit (and so hold) the lock
    "$@" 9<&- >"$tmplog" 2>&1 && return 0
    local rc=$?
    echo "$me: failed ($rc): $*" >&2
    sed 's/^/    /' "$tmplog" >&2
    return $rc
}

drop_slot() {
    local state
    for _ in $(seq 1 50); do
        state=$(psql_at "$PRIMARY_PORT" "select active from pg_replication_slots where slot_name = '$SLOT'") ||
            die "cannot query pg_replication_slots on the primary"
        case "$state" in
        "") return 0 ;;
        f) psql_at "$PRIMARY_PORT" "select pg_drop_replication_slot('$SLOT')" >/dev/null 2>&1 ;;
        t) sleep 0.2 ;;  # the walsender of the replica just stopped has not exited yet
        esac
    done
    # still in use after 10 s: a leftover walsender for our slot; end it (not the primary)
    psql_at "$PRIMARY_PORT" "select pg_terminate_backend(active_pid) from pg_replication_slots
        where slot_name = '$SLOT' and active" >/dev/null
    sleep 1
    psql_at "$PRIMARY_PORT" "select pg_drop_replication_slot('$SLOT')" >/dev/null ||
        die "cannot drop replication slot $SLOT on the primary"
}

log_mark=0
mark_log() { log_mark=$(stat -c %s "$(cluster_field 7)" 2>/dev/null || echo 0); }
log_tail() { tail -n 20 "$(cluster_field 7)" 2>/dev/null | sed 's/^/    /' >&2; }
hopeless_in_log() {  # errors that waiting will not cure (the primary was just seen to
    # accept replication connections, so a wal receiver that cannot connect is misconfigured)
    tail -c +$((log_mark + 1)) "$(cluster_field 7)" 2>/dev/null | grep -Eq \
        'has already been removed|system identifier differs|replication slot .* does not exist|ahead of the WAL flush position|insufficient parameter settings|could not connect to the primary server'
}
wait_streaming() {  # seconds
    local deadline=$((SECONDS + $1))
    while [ $SECONDS -lt $deadline ]; do
        streaming && return 0
        hopeless_in_log && return 1
        sleep 0.3
    done
    streaming
}

start_replica() {
    mark_log
    run pg_ctlcluster --skip-systemctl-redirect "$VER" "$CLUSTER" start
}

recreate() {
    local d
    if cluster_exists || [ -d "$CONFDIR" ]; then
        if ! run pg_dropcluster --stop "$VER" "$CLUSTER"; then
            pg_isready -q -h "$HOST" -p "$REPLICA_PORT" && die "cannot stop/drop cluster $TAG"
            rm -rf "$CONFDIR" "/var/lib/postgresql/$VER/$CLUSTER"
        fi
    fi
    pg_isready -q -h "$HOST" -p "$REPLICA_PORT" &&
        die "something not managed here still listens on $HOST:$REPLICA_PORT"
    rm -rf "/var/lib/postgresql/$VER/$CLUSTER"  # a leftover data directory without a cluster
    drop_slot
    run pg_createcluster "$VER" "$CLUSTER" -p "$REPLICA_PORT" --start-conf=auto ||
        die "pg_createcluster $VER $CLUSTER failed"
    d=$(cluster_field 6)
    [ -n "$d" ] || die "cluster $TAG not listed by pg_lsclusters after pg_createcluster"
    # pg_basebackup wants an empty directory; keep the one pg_createcluster made (0700,
    # owned by postgres), as its parent may be owned by root
    find "$d" -mindepth 1 -delete || die "cannot empty $d"
    run as_pg "$PGBIN/pg_basebackup" -h "$HOST" -p "$PRIMARY_PORT" -U postgres -D "$d" \
        -R -X stream -c fast -C -S "$SLOT" || die "pg_basebackup from $HOST:$PRIMARY_PORT failed"
    # ALTER SYSTEM settings copied from the primary must not move the replica's address
    sed -i -E '/^[[:space:]]*(port|listen_addresses|hot_standby)[[:space:]]*=/d' "$d/postgresql.auto.conf"
    write_conf
    start_replica || { log_tail; die "cluster $TAG does not start"; }
}

started_at=$SECONDS
if ! cluster_exists || ! datadir_ok; then
    what=created
    cluster_exists && what=re-created
    recreate
else
    what=started
    if write_conf && cluster_online; then
        what=restarted  # configuration changed
        mark_log
        run pg_ctlcluster --skip-systemctl-redirect "$VER" "$CLUSTER" restart || what=broken
    elif cluster_online; then
        what=reconnected
        mark_log
    else
        start_replica || what=broken
    fi
    # an existing replica that does not stream soon is rebuilt rather than debugged
    if [ "$what" = broken ] || ! wait_streaming $((TIMEOUT / 2)); then
        what=re-created
        recreate
    fi
fi
if ! wait_streaming "$TIMEOUT"; then
    echo "$me: $TAG on $HOST:$REPLICA_PORT is not streaming from $HOST:$PRIMARY_PORT after ${TIMEOUT}s; log tail:" >&2
    log_tail
    exit 1
fi
case "$what" in
created | re-created)
    finish "$what $TAG on $HOST:$REPLICA_PORT with pg_basebackup -R (slot $SLOT) in $((SECONDS - started_at))s, streaming" ;;
*)
    finish "$what $TAG on $HOST:$REPLICA_PORT, streaming from $HOST:$PRIMARY_PORT" ;;
esac
