#!/usr/bin/env bash
# Start the local PostgreSQL and MariaDB servers if they are installed but stopped, and
# the PostgreSQL hot standby on 127.0.0.1:5433 (scripts/ensure-replica.sh).
# Servers that are not installed are left alone: the test suite then skips their
# backends (or fails, when CI=true).
set -u

wait_for() {  # name, command...
    local name=$1; shift
    for _ in $(seq 1 30); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 1
    done
    echo "ensure-services: $name did not come up within 30 s" >&2
    return 1
}

if command -v pg_isready >/dev/null 2>&1; then
    if ! pg_isready -q -h 127.0.0.1 -p 5432; then
        if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
            echo "ensure-services: starting PostgreSQL"
            pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
            wait_for PostgreSQL pg_isready -q -h 127.0.0.1 -p 5432
        fi
    fi
    # the hot-standby replica on 127.0.0.1:5433 for the read-replica tests
    if pg_isready -q -h 127.0.0.1 -p 5432 && command -v pg_ctlcluster >/dev/null 2>&1; then
        bash "$(dirname "$0")/ensure-replica.sh" ||
            echo "ensure-services: the PostgreSQL replica is not available (see above)" >&2
    fi
fi

if [ -x /usr/sbin/mariadbd ]; then
    if ! mariadb-admin -uroot -h127.0.0.1 ping >/dev/null 2>&1; then
        echo "ensure-services: starting MariaDB"
        start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
        wait_for MariaDB mariadb-admin -uroot -h127.0.0.1 ping
    fi
fi
# PgBouncer for the transaction-pooling tests (the tests start their own instance)
if ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-services: installing pgbouncer"
    (apt-get install -y -qq pgbouncer >/dev/null 2>&1 ||
        (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq pgbouncer >/dev/null 2>&1)) ||
        echo "ensure-services: could not install pgbouncer" >&2
fi
exit 0
