#!/usr/bin/env bash
# Make a Prometheus server binary (and promtool) available for tests/test_prometheus_server.py,
# which starts its own instance on a free port. Installs Debian's `prometheus` package if
# missing, without the node exporter it recommends (another daemon, on 9100), and stops the
# system service the package may have started on 9090: nothing is left running. Prints one
# line; exits 0 even when it cannot install (the test then skips, or fails when CI=true).
set -u

version() {  # "prometheus, version 2.42.0+ds (branch: ...)" -> "prometheus 2.42.0+ds"
    "$1" --version 2>&1 | head -n 1 | awk '{print "prometheus", $3}'
}

binary=$(command -v prometheus || echo /usr/bin/prometheus)
if [ -x "$binary" ]; then
    echo "ensure-prometheus: $(version "$binary") at $binary"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-prometheus: prometheus not installed and no apt-get; its test skips (fails under CI=true)" >&2
    exit 0
fi

install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus \
        >/dev/null 2>&1
}
if ! (install || (apt-get update -qq >/dev/null 2>&1 && install)); then
    echo "ensure-prometheus: could not install prometheus; its test skips (fails under CI=true)" >&2
    exit 0
fi

# The package enables and starts its service (unless a policy-rc.d forbids it, as in
# Docker images). Undo that: the tests run their own instance, and nobody asked for 9090.
if [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus.service >/dev/null 2>&1 || true
else
    if [ -x /etc/init.d/prometheus ]; then
        /etc/init.d/prometheus stop >/dev/null 2>&1 || true
    fi
    update-rc.d prometheus disable >/dev/null 2>&1 || true
fi
echo "ensure-prometheus: installed $(version /usr/bin/prometheus) (its system service stopped and disabled)"
exit 0
