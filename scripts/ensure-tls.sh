#!/usr/bin/env bash
# Bring up two TLS-only database servers for the TLS tests, next to (and never touching)
# the shared servers on 127.0.0.1:5432 and 127.0.0.1:3306, with a test CA and
# certificates made here:
#
#   - PostgreSQL on 127.0.0.1:5436: the Debian cluster <major>/tls (pg_createcluster
#     layout, so `pg_ctlcluster <major> tls start|stop` works; <major> is the installed
#     server's, 15 on Debian 12), ssl = on, pg_hba.conf written whole: plain TCP is
#     rejected (hostnossl ... reject), bento_cert logs in with its client certificate
#     only (method cert: certificate signed by the test CA, CN = user name), every other
#     user with scram-sha-256 over TLS; the postgres superuser only over the unix socket
#     (peer: `runuser -u postgres -- psql -p 5436`).
#   - MariaDB on 127.0.0.1:3307: its own mariadbd, run from a copy of the binary named
#     bento-tls-mariadbd (so that `start-stop-daemon --exec /usr/sbin/mariadbd` and
#     `pgrep -x mariadbd`, which start and await the shared server, never see it); its
#     own datadir, socket, pid file, log and option file (read with --defaults-file, so
#     /etc/mysql does not apply), TLS with
#     the test certificates and require_secure_transport = ON (plain TCP refused); root
#     only over its unix socket (unix_socket authentication, as the system root user).
#
# Certificates (RSA 2048, SHA-256, 10 years), in /var/lib/bento-tls/certs:
#   ca.crt, ca.key                  self-signed CA "bento-db test CA"
#   server.crt, server.key          CN=localhost, subjectAltName DNS:localhost only (no IP:
#                                   verify-full / hostname checking against 127.0.0.1
#                                   fails, against localhost succeeds), serverAuth
#   client.crt, client.key          CN=bento_cert, clientAuth (the bento_cert user on both)
#   other-ca.crt, other-ca.key      an unrelated self-signed CA "bento-db other test CA"
#                                   (a wrong CA: verification against it must fail)
#   other-client.crt, other-client.key
#                                   CN=bento_cert, clientAuth, signed by the other CA
#                                   (a client certificate both servers must refuse)
# *.crt are 0644, *.key 0600 (owned by root: libpq, asyncpg and Python's ssl accept
# that). They are made only when one is missing, when server.crt's subjectAltName is not
# exactly DNS:localhost, when a certificate does not verify against its CA or expires
# within 30 days; the servers keep their own copies (server.crt, server.key, ca.crt in
# /var/lib/postgresql/<major>/tls and /var/lib/bento-tls/mariadb-ssl, owned by the server's
# user), refreshed here with a reload (PostgreSQL) or FLUSH SSL (MariaDB) when they differ.
#
# Users (database "test" on both; each can create tables there and read and write the
# others' tables):
#   bento_tls     password bento-tls-pw   the tests' admin, a superuser on both (it sets
#                                         bento_rotate's password, ends its sessions:
#                                         pg_terminate_backend, KILL CONNECTION);
#                                         PostgreSQL: SUPERUSER, scram-sha-256 over TLS,
#                                         owns "test"; MariaDB: ALL PRIVILEGES ON *.* WITH
#                                         GRANT OPTION, REQUIRE SSL
#   bento_cert    PostgreSQL: no password, client certificate only (cert);
#                 MariaDB: password bento-cert-pw and REQUIRE X509 (any certificate
#                 signed by the test CA)
#   bento_rotate  password rotate-0       created with it once and never reset here (the
#                                         tests change it); REQUIRE SSL on MariaDB
# PostgreSQL: the three are members of pg_read_all_data and pg_write_all_data, and
# PUBLIC has ALL on schema public of "test". MariaDB: ALL PRIVILEGES ON test.* (for
# bento_cert and bento_rotate).
#
# Idempotent: exits 0 at once (about 0.1-0.2 s) when the certificates are in place, both
# servers run with the configuration below and a TLS login of bento_tls (and, on
# PostgreSQL, of bento_cert with its certificate) works. Otherwise it makes what is
# missing (the certificates; the cluster, with pg_createcluster; the MariaDB data
# directory, with mariadb-install-db), rewrites the configuration that differs (then
# restarts the server, or reloads it for pg_hba.conf and certificates), starts a stopped
# server (waiting up to 60 s, ENSURE_TLS_TIMEOUT), creates missing users and the
# database, and checks the logins. A server that does not start is rebuilt from nothing
# once (announced on stderr): these servers hold test data only. The two servers are
# handled independently: one failing does not keep the other down (exit status 1).
#
# For tests (all paths fixed):
#   CA / certificates           /var/lib/bento-tls/certs/{ca,server,client,other-ca,other-client}.{crt,key}
#   PostgreSQL                  cluster <major>/tls, data /var/lib/postgresql/<major>/tls,
#                               configuration /etc/postgresql/<major>/tls (conf.d/90-ensure-tls.conf),
#                               log /var/log/postgresql/postgresql-<major>-tls.log,
#                               socket /var/run/postgresql/.s.PGSQL.5436
#   MariaDB                     option file /var/lib/bento-tls/mariadb.cnf (admin:
#                               `mariadb --defaults-file=/var/lib/bento-tls/mariadb.cnf`
#                               connects as root through the socket), data /var/lib/bento-tls/mariadb,
#                               socket /run/bento-tls/mariadb.sock, pid /run/bento-tls/mariadb.pid,
#                               log /var/log/bento-tls/mariadb.log
# e.g. postgresql://bento_tls:bento-tls-pw@localhost:5436/test?sslmode=verify-full&sslrootcert=/var/lib/bento-tls/certs/ca.crt
#      mariadb -h 127.0.0.1 -P 3307 -u bento_tls -pbento-tls-pw --ssl-ca=/var/lib/bento-tls/certs/ca.crt test
#
# Run as root. The MariaDB server is fully detached (own session, stdin /dev/null, output
# to its log), so a caller capturing this script's output does not hang. Concurrent runs
# are serialised with flock. Prints one line on success (what it did, if anything, in
# parentheses); notices and errors go to stderr, errors with a non-zero exit status.
set -u
umask 022

me=ensure-tls
die() { echo "$me: $*" >&2; exit 1; }
warn() { echo "$me: $*" >&2; }

HOST=127.0.0.1
ROOT=/var/lib/bento-tls
CERTS=$ROOT/certs
DAYS=3650
TIMEOUT=${ENSURE_TLS_TIMEOUT:-60}   # seconds to wait for a server to start
TLS_PW=bento-tls-pw
CERT_PW=bento-cert-pw
ROTATE_PW=rotate-0                  # bento_rotate's first password, never reset

PG_PORT=5436
PG_CLUSTER=tls
PG_SOCKDIR=/var/run/postgresql

MY_PORT=3307
MY_CNF=$ROOT/mariadb.cnf
MY_DATADIR=$ROOT/mariadb
MY_SSL=$ROOT/mariadb-ssl
MY_RUN=/run/bento-tls
MY_SOCK=$MY_RUN/mariadb.sock
MY_PID=$MY_RUN/mariadb.pid
LOGDIR=/var/log/bento-tls
MY_LOG=$LOGDIR/mariadb.log
SYS_MARIADBD=/usr/sbin/mariadbd
# A copy of the server binary under another name: the shared server is started with
# `start-stop-daemon --start --oknodo --exec /usr/sbin/mariadbd` and awaited with
# `pgrep -x mariadbd`, and both would take this instance for it (then not start it)
MARIADBD=$ROOT/bin/bento-tls-mariadbd

[ "$(id -u)" -eq 0 ] || die "run as root (it starts servers as postgres and mysql)"
# the caller's libpq and MariaDB client settings must not leak into the checks
unset PGHOST PGHOSTADDR PGPORT PGDATABASE PGUSER PGPASSWORD PGPASSFILE PGOPTIONS PGSERVICE \
    PGSSLMODE PGSSLCERT PGSSLKEY PGSSLROOTCERT PGSSLCRL PGREQUIRESSL PGTARGETSESSIONATTRS \
    MYSQL_HOST MYSQL_TCP_PORT MYSQL_UNIX_PORT MYSQL_PWD
export PGCONNECT_TIMEOUT=5

# PostgreSQL: the major version of the shared server (cluster <major>/main), else the
# newest installed
PG_MAJOR=
for f in /usr/lib/postgresql/*/bin/postgres; do
    [ -x "$f" ] || continue
    v=${f#/usr/lib/postgresql/}
    v=${v%%/*}
    if [ -z "$PG_MAJOR" ] || [ -f "/etc/postgresql/$v/main/postgresql.conf" ] ||
        { [ ! -f "/etc/postgresql/$PG_MAJOR/main/postgresql.conf" ] && [ "${v%%.*}" -gt "${PG_MAJOR%%.*}" ]; }; then
        PG_MAJOR=$v
    fi
done
PGBIN=/usr/lib/postgresql/$PG_MAJOR/bin
PG_CONFDIR=/etc/postgresql/$PG_MAJOR/$PG_CLUSTER
PG_DATADIR=/var/lib/postgresql/$PG_MAJOR/$PG_CLUSTER
PG_CONF=$PG_CONFDIR/conf.d/90-ensure-tls.conf
PG_LOG=/var/log/postgresql/postgresql-$PG_MAJOR-$PG_CLUSTER.log
TAG=$PG_MAJOR/$PG_CLUSTER

as_pg() { (cd / && setpriv --reuid=postgres --regid=postgres --init-groups \
    env HOME=/var/lib/postgresql USER=postgres LOGNAME=postgres "$@"); }

# Serialise concurrent runs (two test sessions starting together).
{ mkdir -p "$ROOT" && chmod 755 "$ROOT"; } || die "cannot create $ROOT"
exec 9>>"$ROOT/ensure-tls.lock" && { flock -w 600 9 || die "another ensure-tls run holds $ROOT/ensure-tls.lock"; }

notes=()
note() { notes+=("$*"); }
tmplog=
run() {  # command...: run quietly, show its output if it fails
    [ -n "$tmplog" ] || { tmplog=$(mktemp) && trap 'rm -f "$tmplog"' EXIT; }
    # 9>&-: a server started here must not inherit (and so hold) the lock
    "$@" 9>&- >"$tmplog" 2>&1 && return 0
    local rc=$?
    warn "failed ($rc): $*"
    sed 's/^/    /' "$tmplog" >&2
    return $rc
}
write_file() {  # path, owner, mode, content: returns 0 when it changed the file
    [ -f "$1" ] && [ "$(<"$1")" = "$4" ] && return 1
    { printf '%s\n' "$4" >"$1.tmp" && chown "$2" "$1.tmp" && chmod "$3" "$1.tmp" && mv -f "$1.tmp" "$1"; } ||
        { warn "cannot write $1"; rm -f "$1.tmp"; return 2; }
    return 0
}
copy_ssl() {  # directory, owner: the server's copies of server.crt, server.key, ca.crt;
    # returns 0 when one changed
    local f mode changed=1
    for f in server.crt server.key ca.crt; do
        cmp -s "$CERTS/$f" "$1/$f" && continue
        mode=0644
        [ "$f" = server.key ] && mode=0600
        install -o "$2" -g "$2" -m "$mode" "$CERTS/$f" "$1/$f" || { warn "cannot copy $f to $1"; return 2; }
        changed=0
    done
    return $changed
}
alive() {  # pid: a process that runs (a zombie does not: under an init that is slow to reap
    # them, a server killed a moment ago still answers kill -0)
    local st
    st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    st=${st##*) }
    case ${st%% *} in Z | X | x | "") return 1 ;; esac
}
ssl_current() {  # directory: the server's copies are the current certificates
    cmp -s "$CERTS/server.crt" "$1/server.crt" && cmp -s "$CERTS/server.key" "$1/server.key" &&
        cmp -s "$CERTS/ca.crt" "$1/ca.crt"
}

# ---- certificates ---------------------------------------------------------------------
CERT_FILES=(ca.crt ca.key server.crt server.key client.crt client.key other-ca.crt other-ca.key
    other-client.crt other-client.key)
OPENSSL_CNF='# Written by scripts/ensure-tls.sh
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always'

certs_ok() {
    local f out
    for f in "${CERT_FILES[@]}"; do [ -s "$CERTS/$f" ] || return 1; done
    # the subjectAltName, exactly DNS:localhost, and 30 days left
    out=$(openssl x509 -in "$CERTS/server.crt" -noout -ext subjectAltName -checkend 2592000 2>/dev/null) || return 1
    out=${out//[[:space:]]/}
    [ "$out" = "X509v3SubjectAlternativeName:DNS:localhostCertificatewillnotexpire" ] || return 1
    openssl verify -CAfile "$CERTS/ca.crt" "$CERTS/server.crt" "$CERTS/client.crt" >/dev/null 2>&1
}

make_certs() {  # in a new directory, then swapped in (the old set is never half replaced)
    local new=$CERTS.new
    rm -rf "$new" && mkdir -m 755 "$new" || return 1
    (
        cd "$new" || exit 1
        umask 077
        printf '%s\n' "$OPENSSL_CNF" >openssl.cnf
        key() { openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1.key" 2>/dev/null; }
        ca() {  # name, common name
            key "$1" && openssl req -config openssl.cnf -x509 -new -sha256 -days "$DAYS" \
                -key "$1.key" -subj "/CN=$2" -extensions ca -out "$1.crt"
        }
        leaf() {  # name, common name, issuer, extensions section
            key "$1" && openssl req -config openssl.cnf -new -key "$1.key" -subj "/CN=$2" -out "$1.csr" &&
                openssl x509 -req -sha256 -days "$DAYS" -in "$1.csr" -CA "$3.crt" -CAkey "$3.key" \
                    -set_serial "0x$(openssl rand -hex 16)" -extfile openssl.cnf -extensions "$4" \
                    -out "$1.crt" 2>/dev/null && rm -f "$1.csr"
        }
        ca ca "bento-db test CA" &&
            leaf server localhost ca server &&
            leaf client bento_cert ca client &&
            ca other-ca "bento-db other test CA" &&
            leaf other-client bento_cert other-ca client &&
            rm -f openssl.cnf &&
            chmod 644 ./*.crt && chmod 600 ./*.key
    ) || { rm -rf "$new"; return 1; }
    rm -rf "$CERTS.old"
    { [ ! -e "$CERTS" ] || mv "$CERTS" "$CERTS.old"; } && mv "$new" "$CERTS" || return 1
    rm -rf "$CERTS.old"
}

# ---- desired configuration ------------------------------------------------------------
pg_conf="# Written by scripts/ensure-tls.sh on every run; local edits are lost.
listen_addresses = '$HOST'
port = $PG_PORT
max_connections = 50
shared_buffers = 16MB
password_encryption = scram-sha-256
ssl = on
ssl_cert_file = '$PG_DATADIR/server.crt'
ssl_key_file = '$PG_DATADIR/server.key'
ssl_ca_file = '$PG_DATADIR/ca.crt'
ssl_crl_file = ''
ssl_crl_dir = ''"

pg_hba="# Written by scripts/ensure-tls.sh on every run; local edits are lost.
# TYPE    DATABASE  USER        ADDRESS        METHOD
local     all       postgres                   peer
hostnossl all       all         0.0.0.0/0      reject
hostnossl all       all         ::/0           reject
hostssl   all       bento_cert  127.0.0.1/32   cert
hostssl   all       bento_cert  ::1/128        cert
hostssl   all       all         127.0.0.1/32   scram-sha-256
hostssl   all       all         ::1/128        scram-sha-256"

my_cnf="# Written by scripts/ensure-tls.sh on every run; local edits are lost.
# The TLS-only MariaDB on $HOST:$MY_PORT: mariadbd --defaults-file=$MY_CNF
# (clients: mariadb --defaults-file=$MY_CNF connects as root through the socket).
[client-server]
socket = $MY_SOCK
port = $MY_PORT

[client]
user = root

[mysqld]
user = mysql
basedir = /usr
lc-messages-dir = /usr/share/mysql
plugin-dir = /usr/lib/mysql/plugin
datadir = $MY_DATADIR
pid-file = $MY_PID
log-error = $MY_LOG
bind-address = $HOST
skip-name-resolve
character-set-server = utf8mb4
collation-server = utf8mb4_general_ci
ssl-ca = $MY_SSL/ca.crt
ssl-cert = $MY_SSL/server.crt
ssl-key = $MY_SSL/server.key
require-secure-transport = ON
max-connections = 100
performance-schema = OFF
innodb-buffer-pool-size = 32M
innodb-log-file-size = 16M
innodb-flush-log-at-trx-commit = 2
key-buffer-size = 1M"

# ---- checks (the fast path runs only these) -------------------------------------------
pg_psql_tls() {  # sql...: as bento_tls over TLS (verify-full), then as bento_cert with its certificate
    local tls="host=localhost hostaddr=$HOST port=$PG_PORT dbname=test sslmode=verify-full sslrootcert=$CERTS/ca.crt"
    "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 "$tls user=bento_tls password=$TLS_PW" -c "$1" \
        -c "\\connect '$tls user=bento_cert sslcert=$CERTS/client.crt sslkey=$CERTS/client.key'" -c "$2"
}
pg_login_ok() {
    [ "$(pg_psql_tls "
        select s.ssl and (select count(*) from pg_roles where rolname in ('bento_cert', 'bento_rotate')
            and rolcanlogin) = 2 and has_schema_privilege('bento_rotate', 'public', 'CREATE')
            and (select rolsuper from pg_roles where rolname = current_user)
        from pg_stat_ssl s where s.pid = pg_backend_pid()" \
        "select ssl and client_dn = '/CN=bento_cert' from pg_stat_ssl where pid = pg_backend_pid()" 2>/dev/null)" \
        = $'t\nt' ]
}
pg_ok() {
    [ -x "$PGBIN/psql" ] && [ -f "$PG_CONFDIR/postgresql.conf" ] && [ -f "$PG_CONF" ] &&
        [ "$(<"$PG_CONF")" = "$pg_conf" ] && [ "$(<"$PG_CONFDIR/pg_hba.conf")" = "$pg_hba" ] &&
        ssl_current "$PG_DATADIR" && pg_login_ok
}

my_root() {  # sql: as root through the socket
    mariadb --defaults-file="$MY_CNF" --connect-timeout=5 -BN -e "$1"
}
my_login_ok() {  # bento_tls over TCP with TLS
    local out
    out=$(mariadb --no-defaults --protocol=TCP -h "$HOST" -P "$MY_PORT" --connect-timeout=5 \
        -u bento_tls -p"$TLS_PW" --ssl --ssl-ca="$CERTS/ca.crt" -BN -e "show session status like 'Ssl_cipher'" test 2>/dev/null) &&
        [ -n "${out#Ssl_cipher}" ]
}
my_state_ok() {  # server settings, users and database, seen by root through the socket
    [ "$(my_root "select @@port = $MY_PORT and @@have_ssl = 'YES' and @@require_secure_transport = 1
        and (select count(*) from mysql.user where host = '%' and ((user in ('bento_tls', 'bento_rotate')
             and ssl_type = 'ANY') or (user = 'bento_cert' and ssl_type = 'X509'))) = 3
        and (select count(*) from mysql.user where host = '%' and user = 'bento_tls'
             and super_priv = 'Y' and grant_priv = 'Y') = 1
        and (select count(*) from mysql.db where db = 'test' and host = '%'
             and user in ('bento_tls', 'bento_cert', 'bento_rotate')) = 3
        and exists (select 1 from information_schema.schemata where schema_name = 'test')" 2>/dev/null)" = 1 ]
}
my_pid() {  # the pid of the mariadbd running on our option file
    local pid
    pid=$(cat "$MY_PID" 2>/dev/null)
    if [ -n "$pid" ] && alive "$pid" &&
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "--defaults-file=$MY_CNF"; then
        echo "$pid"
        return 0
    fi
    pgrep -o -f -- "mariadbd --defaults-file=$MY_CNF( |\$)"
}
my_binary_ok() {  # the copy is current and the server runs from it
    local pid
    cmp -s "$SYS_MARIADBD" "$MARIADBD" && pid=$(my_pid) &&
        [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$MARIADBD" ]
}
my_ok() {
    my_binary_ok && [ -f "$MY_CNF" ] && [ "$(<"$MY_CNF")" = "$my_cnf" ] && ssl_current "$MY_SSL" || return 1
    local login state
    my_login_ok &
    login=$!
    my_state_ok
    state=$?
    wait "$login" && [ $state -eq 0 ]
}

summary="PostgreSQL $TAG on $HOST:$PG_PORT, MariaDB on $HOST:$MY_PORT; certificates in $CERTS"

# ---- fast path: everything up (the checks run side by side) ------------------------------
certs_ok &
certs_check=$!
pg_ok &
pg_check=$!
my_ok
my_up=$?
wait "$pg_check"
pg_up=$?
if wait "$certs_check"; then
    if [ $pg_up -eq 0 ] && [ $my_up -eq 0 ]; then
        echo "$me: up ($summary)"
        exit 0
    fi
else
    pg_up=1 my_up=1  # new certificates: both servers get them
fi

started_at=$SECONDS

# ---- certificates -----------------------------------------------------------------------
if ! certs_ok; then
    if ! command -v openssl >/dev/null 2>&1; then
        command -v apt-get >/dev/null 2>&1 || die "openssl missing and no apt-get to install it"
        warn "installing openssl (apt-get)"
        export DEBIAN_FRONTEND=noninteractive
        run apt-get install -y -qq -o DPkg::Lock::Timeout=300 openssl ||
            { run apt-get update -qq && run apt-get install -y -qq -o DPkg::Lock::Timeout=300 openssl; } ||
            die "could not install openssl"
    fi
    what=made
    [ -e "$CERTS" ] && what=re-made
    make_certs || die "cannot make the certificates in $CERTS"
    certs_ok || die "the certificates just made in $CERTS do not check out"
    note "$what the certificates"
fi

# ---- PostgreSQL -------------------------------------------------------------------------
pg_cluster_exists() { [ -f "$PG_CONFDIR/postgresql.conf" ] && [ -f "$PG_DATADIR/PG_VERSION" ]; }
pg_running() {  # the postmaster of postmaster.pid runs
    local pid
    read -r pid 2>/dev/null <"$PG_DATADIR/postmaster.pid" && [ -n "$pid" ] && alive "$pid"
}
pg_log_tail() { tail -n 15 "$PG_LOG" 2>/dev/null | sed 's/^/    /' >&2; }

pg_create() {  # (re)create the cluster from nothing
    if [ -d "$PG_CONFDIR" ] || [ -d "$PG_DATADIR" ]; then
        run pg_dropcluster --stop "$PG_MAJOR" "$PG_CLUSTER" ||
            { pg_running && { warn "cannot stop/drop cluster $TAG"; return 1; }; }
        rm -rf "$PG_CONFDIR" "$PG_DATADIR"
    fi
    if "$PGBIN/pg_isready" -q -h "$HOST" -p "$PG_PORT"; then
        warn "something not managed here listens on $HOST:$PG_PORT"
        return 1
    fi
    run pg_createcluster "$PG_MAJOR" "$PG_CLUSTER" -p "$PG_PORT" --start-conf=auto \
        --encoding=UTF8 --locale=C.UTF-8 -- --auth-local=peer --auth-host=scram-sha-256 ||
        { warn "pg_createcluster $PG_MAJOR $PG_CLUSTER failed"; return 1; }
    pg_cluster_exists || { warn "cluster $TAG incomplete after pg_createcluster"; return 1; }
    grep -Eq "^[[:space:]]*include_dir[[:space:]]*=[[:space:]]*'conf.d'" "$PG_CONFDIR/postgresql.conf" ||
        printf "include_dir = 'conf.d'\n" >>"$PG_CONFDIR/postgresql.conf"
}

pg_write_config() {  # returns 0 restart needed, 1 nothing changed, 2 reload needed, 3 error
    local rc restart=false reload=false
    install -d -o postgres -g postgres -m 755 "$PG_CONFDIR/conf.d" || return 3
    write_file "$PG_CONF" postgres:postgres 644 "$pg_conf"
    rc=$?
    case $rc in 0) restart=true ;; 2) return 3 ;; esac
    write_file "$PG_CONFDIR/pg_hba.conf" postgres:postgres 640 "$pg_hba"
    rc=$?
    case $rc in 0) reload=true ;; 2) return 3 ;; esac
    copy_ssl "$PG_DATADIR" postgres
    rc=$?
    case $rc in 0) reload=true ;; 2) return 3 ;; esac
    $restart && return 0
    $reload && return 2
    return 1
}

pg_start() {  # a few tries: a postmaster killed a moment ago may not be reaped yet, and the
    # new one refuses to start while the socket lock file names a process that exists
    local i
    for i in $(seq 1 10); do
        pg_ctlcluster --skip-systemctl-redirect "$PG_MAJOR" "$PG_CLUSTER" start 9>&- >/dev/null 2>&1 && return 0
        [ "$i" -lt 10 ] && sleep 1
    done
    run pg_ctlcluster --skip-systemctl-redirect "$PG_MAJOR" "$PG_CLUSTER" start
}

pg_wait() {  # ready on the socket (while the postmaster runs)
    local deadline=$((SECONDS + TIMEOUT))
    until "$PGBIN/pg_isready" -q -h "$PG_SOCKDIR" -p "$PG_PORT"; do
        [ $SECONDS -lt $deadline ] && pg_running || return 1
        sleep 0.2
    done
}

pg_admin() {  # database, sql: as postgres through the socket
    as_pg env PGOPTIONS='-c client_min_messages=warning' "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 \
        -h "$PG_SOCKDIR" -p "$PG_PORT" -d "$1" -c "$2"
}

pg_roles() {
    pg_admin postgres "
do \$\$ begin
    if not exists (select from pg_roles where rolname = 'bento_tls') then create role bento_tls; end if;
    if not exists (select from pg_roles where rolname = 'bento_cert') then create role bento_cert; end if;
    if not exists (select from pg_roles where rolname = 'bento_rotate') then
        create role bento_rotate login password '$ROTATE_PW';
    end if;
end \$\$;
alter role bento_tls superuser login password '$TLS_PW';
alter role bento_cert login password null;
alter role bento_rotate login;
grant pg_read_all_data, pg_write_all_data to bento_tls, bento_cert, bento_rotate;" >/dev/null || return 1
    if [ "$(pg_admin postgres "select 1 from pg_database where datname = 'test'")" != 1 ]; then
        pg_admin postgres "create database test owner bento_tls" >/dev/null || return 1
        note "created PostgreSQL database test"
    fi
    pg_admin test "alter database test owner to bento_tls; grant all on schema public to public" >/dev/null
}

ensure_pg() {
    if [ -z "$PG_MAJOR" ] || [ ! -x "$PGBIN/postgres" ] || [ ! -x "$PGBIN/psql" ]; then
        warn "PostgreSQL: no server installed (/usr/lib/postgresql/<major>/bin/postgres)"
        return 1
    fi
    if ! command -v pg_createcluster >/dev/null 2>&1 || ! command -v pg_ctlcluster >/dev/null 2>&1; then
        warn "PostgreSQL: postgresql-common (pg_createcluster) not installed"
        return 1
    fi
    local other what rc
    other=$(pg_lsclusters -h 2>/dev/null | awk -v p="$PG_PORT" -v v="$PG_MAJOR" -v c="$PG_CLUSTER" \
        '$3 == p && !($1 == v && $2 == c) { print $1 "/" $2 }')
    [ -z "$other" ] || { warn "PostgreSQL: port $PG_PORT is configured for cluster $other; not touching it"; return 1; }

    local created=false
    if ! pg_cluster_exists; then
        what=created
        [ -d "$PG_CONFDIR" ] || [ -d "$PG_DATADIR" ] && what=re-created
        pg_create || return 1
        created=true
        note "$what cluster $TAG"
    fi
    pg_write_config
    rc=$?
    [ $rc -ne 3 ] || return 1
    if pg_running; then
        if [ $rc -eq 0 ]; then
            run pg_ctlcluster --skip-systemctl-redirect "$PG_MAJOR" "$PG_CLUSTER" restart ||
                { pg_log_tail; return 1; }
            note "restarted $TAG (configuration changed)"
        elif [ $rc -eq 2 ]; then
            pg_admin postgres "select pg_reload_conf()" >/dev/null || return 1
            note "reloaded $TAG"
        fi
    elif pg_start; then
        $created || note "started $TAG"
    elif ! $created; then
        pg_log_tail
        warn "PostgreSQL: cluster $TAG does not start; re-creating it"
        pg_create || return 1
        pg_write_config
        [ $? -ne 3 ] || return 1
        pg_start || { pg_log_tail; return 1; }
        note "re-created cluster $TAG (it did not start)"
    else
        pg_log_tail
        return 1
    fi
    pg_wait || { warn "PostgreSQL: $TAG not ready on $PG_SOCKDIR (postmaster gone, or ${TIMEOUT}s passed)"; pg_log_tail; return 1; }
    pg_roles || { warn "PostgreSQL: cannot create the roles and database test on $TAG"; return 1; }
    local i
    for i in $(seq 1 25); do  # a reload is asynchronous
        pg_ok && return 0
        sleep 0.2
    done
    pg_psql_tls "select 1" "select 1" >/dev/null  # shows the error
    warn "PostgreSQL: TLS logins to $TAG on localhost:$PG_PORT fail"
    return 1
}

# ---- MariaDB ----------------------------------------------------------------------------
my_ping() { mariadb-admin --defaults-file="$MY_CNF" --connect-timeout=2 ping >/dev/null 2>&1; }
my_log_tail() { tail -n 15 "$MY_LOG" 2>/dev/null | sed 's/^/    /' >&2; }
port_taken() { [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }

my_stop() {  # SIGTERM (a clean shutdown), SIGKILL after 60 s
    local pid
    pid=$(my_pid) || return 0
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 300); do alive "$pid" || return 0; sleep 0.2; done
    warn "MariaDB: pid $pid did not stop within 60 s; killing it"
    kill -KILL "$pid" 2>/dev/null
    sleep 0.5
}

my_install() {  # a new data directory (made aside, then moved into place)
    local new=$MY_DATADIR.new
    rm -rf "$new" "$MY_DATADIR"
    run mariadb-install-db --defaults-file="$MY_CNF" --user=mysql --datadir="$new" \
        --auth-root-authentication-method=socket --skip-test-db --skip-name-resolve ||
        { rm -rf "$new"; warn "MariaDB: mariadb-install-db failed"; my_log_tail; return 1; }
    mv "$new" "$MY_DATADIR"
}

my_start() {  # start detached and wait until it answers
    local pid deadline=$((SECONDS + TIMEOUT))
    if port_taken "$MY_PORT"; then
        warn "MariaDB: something not managed here listens on port $MY_PORT"
        return 1
    fi
    : >>"$MY_LOG"
    (cd / && exec setsid "$MARIADBD" --defaults-file="$MY_CNF") </dev/null >>"$MY_LOG" 2>&1 9>&- &
    pid=$!
    until my_ping; do
        if ! alive "$pid"; then
            warn "MariaDB: mariadbd exited at start-up; $MY_LOG:"
            my_log_tail
            return 1
        fi
        if [ $SECONDS -ge $deadline ]; then
            warn "MariaDB: no answer on $MY_SOCK ${TIMEOUT}s after starting; $MY_LOG:"
            my_log_tail
            my_stop
            return 1
        fi
        sleep 0.2
    done
}

my_users() {
    my_root "
create database if not exists test;
create user if not exists 'bento_tls'@'%' identified by '$TLS_PW';
alter user 'bento_tls'@'%' identified by '$TLS_PW' require ssl;
create user if not exists 'bento_cert'@'%' identified by '$CERT_PW';
alter user 'bento_cert'@'%' identified by '$CERT_PW' require x509;
create user if not exists 'bento_rotate'@'%' identified by '$ROTATE_PW' require ssl;
alter user 'bento_rotate'@'%' require ssl;
grant all privileges on *.* to 'bento_tls'@'%' with grant option;
grant all privileges on test.* to 'bento_tls'@'%', 'bento_cert'@'%', 'bento_rotate'@'%';"
}

ensure_mariadb() {
    local tool
    [ -x "$SYS_MARIADBD" ] || { warn "MariaDB: no server installed ($SYS_MARIADBD)"; return 1; }
    for tool in mariadb-install-db mariadb mariadb-admin; do
        command -v "$tool" >/dev/null 2>&1 || { warn "MariaDB: $tool not installed"; return 1; }
    done
    id mysql >/dev/null 2>&1 || { warn "MariaDB: no mysql user"; return 1; }
    if ! { install -d -o mysql -g mysql -m 755 "$MY_RUN" && install -d -m 755 "$LOGDIR" &&
        install -d -o mysql -g mysql -m 700 "$MY_SSL"; }; then
        warn "cannot create $MY_RUN, $LOGDIR or $MY_SSL"
        return 1
    fi
    [ -e "$MY_LOG" ] || install -o mysql -g mysql -m 640 /dev/null "$MY_LOG"

    local rc cnf_changed=false ssl_changed=false pid
    write_file "$MY_CNF" root:root 644 "$my_cnf"
    rc=$?
    case $rc in 0) cnf_changed=true ;; 2) return 1 ;; esac
    copy_ssl "$MY_SSL" mysql
    rc=$?
    case $rc in 0) ssl_changed=true ;; 2) return 1 ;; esac

    local binary_changed=false
    if ! cmp -s "$SYS_MARIADBD" "$MARIADBD"; then
        [ -x "$SYS_MARIADBD" ] || { warn "MariaDB: $SYS_MARIADBD is not installed"; return 1; }
        if ! { install -D -m 755 "$SYS_MARIADBD" "$MARIADBD.new" && mv -f "$MARIADBD.new" "$MARIADBD"; }; then
            warn "MariaDB: cannot copy $SYS_MARIADBD to $MARIADBD"
            return 1
        fi
        binary_changed=true
    fi
    local restarted=false
    pid=$(my_pid)
    if [ -n "$pid" ] && [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" != "$MARIADBD" ]; then
        binary_changed=true
    fi
    if [ -n "$pid" ] && { $cnf_changed || $binary_changed || ! my_ping; }; then
        if $cnf_changed || $binary_changed; then
            note "restarted MariaDB (configuration or server binary changed)"
        else
            warn "MariaDB: pid $pid does not answer; restarting it"
            note "restarted MariaDB (it did not answer)"
        fi
        restarted=true
        my_stop
        pid=
    fi
    local fresh=false
    if [ ! -f "$MY_DATADIR/mysql_upgrade_info" ]; then
        [ -z "$pid" ] || { my_stop; pid=; }
        my_install || return 1
        fresh=true
        note "made the MariaDB data directory $MY_DATADIR"
    fi
    if [ -z "$pid" ]; then
        if my_start; then
            $fresh || $restarted || note "started MariaDB"
        elif ! $fresh && ! port_taken "$MY_PORT"; then
            warn "MariaDB: re-making the data directory $MY_DATADIR (the server did not start)"
            my_install && my_start || return 1
            note "re-made the MariaDB data directory (the server did not start)"
        else
            return 1
        fi
    elif $ssl_changed; then
        my_root "flush ssl" || { warn "MariaDB: FLUSH SSL failed"; return 1; }
        note "reloaded the MariaDB certificates"
    fi
    my_users || { warn "MariaDB: cannot create the users and database test"; return 1; }
    my_ok && return 0
    mariadb --no-defaults --protocol=TCP -h "$HOST" -P "$MY_PORT" --connect-timeout=5 \
        -u bento_tls -p"$TLS_PW" --ssl --ssl-ca="$CERTS/ca.crt" -e "select 1" test >/dev/null  # shows the error
    warn "MariaDB: the server on $HOST:$MY_PORT does not check out (TLS login of bento_tls, users, settings)"
    return 1
}

failed=()
if [ $pg_up -ne 0 ]; then ensure_pg || failed+=("PostgreSQL $TAG on $HOST:$PG_PORT"); fi
if [ $my_up -ne 0 ]; then ensure_mariadb || failed+=("MariaDB on $HOST:$MY_PORT"); fi
if [ ${#failed[@]} -gt 0 ]; then
    what=$(IFS=";"; echo "${failed[*]}")
    die "not available: ${what//;/, }"
fi
extra="checked"
if [ ${#notes[@]} -gt 0 ]; then
    extra=$(IFS=';'; echo "${notes[*]}")
    extra=${extra//;/; }
fi
echo "$me: up ($summary; $extra; $((SECONDS - started_at))s)"
