#!/bin/sh
# deploy/install-deps.sh [build|demo|test|bench|all] -- install from Debian's
# packages what holdfast needs and is missing.  Needs root (or sudo); does
# nothing when everything is present.
#   build  compile holdfast
#   demo   build + what deploy/demo.sh runs (lighttpd, curl); not Check:
#          the demo configures --disable-tests
#   test   build + what the tests run: Check for the unit tests (configure
#          fails without it unless --disable-tests), and the web servers of
#          every deploy/ configuration (tests/deploy/run.sh): apache2 brings
#          mod_proxy_fcgi, mod_cgi/mod_cgid and mod_setenvif, mod_fcgid is
#          libapache2-mod-fcgid, nginx-light has the FastCGI module
#   bench  build + what tests/bench/compare-nchan runs: Check (lpload is a
#          test program), nginx with nchan, wrk, python3, curl
set -eu
build="autoconf automake libtool pkg-config make gcc libfcgi-dev libsqlite3-dev libjansson-dev libssl-dev sqlite3"
demo="lighttpd curl"
bench="check nginx-light libnginx-mod-nchan wrk python3 curl"
test="check valgrind clang libclang-rt-14-dev lighttpd nginx-light apache2 libapache2-mod-fcgid curl python3 php-cli chromium"
case "${1:-all}" in
  build) want=$build ;;
  demo) want="$build $demo" ;;
  bench) want="$build $bench" ;;
  test|all) want="$build $test" ;;
  *) echo "usage: $0 [build|demo|test|bench|all]" >&2; exit 2 ;;
esac
missing=""
for p in $want; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "installing:$missing"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
# sudo resets the environment: hand DEBIAN_FRONTEND over explicitly.  Wait
# for a dpkg lock held by another apt (unattended-upgrades on a fresh
# machine) rather than failing at once.
apt="$sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300"
$apt update -q
# The web servers are only run by the tests and the demo, on private ports:
# keep Debian from starting their system-wide services.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
  $sudo chmod +x /usr/sbin/policy-rc.d
  trap '$sudo rm -f /usr/sbin/policy-rc.d' EXIT
fi
# shellcheck disable=SC2086
$apt install -y -q --no-install-recommends $missing
# Say so now rather than in a confusing build or test error later.
still=""
for p in $missing; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || still="$still $p"
done
if [ -n "$still" ]; then
  echo "install-deps: still missing after apt-get install:$still" >&2
  exit 1
fi
