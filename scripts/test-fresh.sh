#!/usr/bin/env bash
# make test-fresh: the two-command promise checked as a new user meets it. A minimal Debian 12 root
# (debootstrap --variant=minbase bookworm, cached and never written to), an overlay over it as / (as in a
# container: no block device behind /), the checkout copied to /root/project (mode 0700 above it), then, in a
# private mount namespace and chrooted there: `apt-get install make`, `CI=true make test`.
# The mirror is this machine's own (its apt sources); apt and pip inside use this machine's configuration.
# Needs root. Output: the run's log at $HYPERMESH_FRESH_DIR/run-*/fresh.log; exit code: make test's.
# Usage: scripts/test-fresh.sh [make arguments inside, default: test]
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
SUITE=bookworm
WORK=${HYPERMESH_FRESH_DIR:-/var/tmp/hypermesh-fresh}

if [ "${1:-}" = "--inside" ]; then
  # In the private mount namespace: assemble the root, then become its first process (PID 1 with a PID namespace).
  shift
  RUN=$1 BASE=$2
  shift 2
  R=$RUN/root
  mkdir -p "$RUN/upper" "$RUN/work" "$R"
  mount -t overlay overlay -o "lowerdir=$BASE,upperdir=$RUN/upper,workdir=$RUN/work" "$R"
  mount -t proc proc "$R/proc"
  for fs in sys dev; do mount --rbind "/$fs" "$R/$fs" && mount --make-rslave "$R/$fs"; done
  mount -t tmpfs -o mode=1777 tmpfs "$R/dev/shm"  # the host's /dev/shm is not this root's business
  # This machine's apt sources and settings (a snapshot mirror may need its Valid-Until check off), DNS.
  rm -f "$R/etc/apt/sources.list"
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && cp "$f" "$R$f"
  done
  cp -r /etc/apt/apt.conf.d/. "$R/etc/apt/apt.conf.d/"
  cp /etc/resolv.conf /etc/hosts "$R/etc/" 2>/dev/null || true
  # Certificate authorities this machine added (a proxy's): ca-certificates, once a package pulls it in, rebuilds
  # the bundle from these, so copying the bundle alone would not last.
  [ -d /usr/local/share/ca-certificates ] && cp -r /usr/local/share/ca-certificates/. "$R/usr/local/share/ca-certificates/"
  # pip's configuration and the files it names (a proxy's CA certificate, constraints), at the same paths.
  confs=(/etc/pip.conf /etc/xdg/pip/pip.conf)
  for f in "${confs[@]}" "${PIP_CERT:-}" "${PIP_CONSTRAINT:-}" "${REQUESTS_CA_BUNDLE:-}" \
    $(sed -n 's/^[^#=]*=[[:space:]]*\(\/[^[:space:]]*\)[[:space:]]*$/\1/p' "${confs[@]}" 2>/dev/null); do
    [ -n "$f" ] && [ -f "$f" ] && mkdir -p "$R$(dirname "$f")" && cp -L "$f" "$R$f"
  done
  # Package scripts must not start services in here (prometheus, node-exporter): tests start their own.
  printf '#!/bin/sh\nexit 101\n' > "$R/usr/sbin/policy-rc.d" && chmod 755 "$R/usr/sbin/policy-rc.d"
  # The checkout as a user has it: the tracked and untracked files, no venv, no caches, no git metadata.
  mkdir -p "$R/root/project" && chmod 700 "$R/root"
  tar -C "$REPO" --exclude=./.venv --exclude=./.git --exclude='*/__pycache__' --exclude=./.mypy_cache \
    --exclude=./.ruff_cache --exclude=./.pytest_cache --exclude=./tests/artifacts -cf - . | tar -C "$R/root/project" -xf -
  keep=()
  for name in $(compgen -e); do
    case $name in PIP_*|REQUESTS_CA_BUNDLE|SSL_CERT_FILE|http_proxy|https_proxy|no_proxy|HTTP_PROXY|HTTPS_PROXY|NO_PROXY)
      keep+=("$name=${!name}");; esac
  done
  # SIGINT and SIGQUIT back to their defaults: started in the background (nohup ... &), a shell hands them on
  # ignored, and Python then leaves Ctrl-C ignored, which the Ctrl-C tests would take for a hang.
  exec chroot "$R" /usr/bin/env --default-signal=INT,QUIT -i HOME=/root USER=root LANG=C.UTF-8 TERM=dumb CI=true \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "${keep[@]}" /bin/bash -c '
      set -e
      echo "test-fresh: $(. /etc/os-release; echo "$PRETTY_NAME"), / is $(findmnt -no FSTYPE / 2>/dev/null || stat -f -c %T /)"
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq && apt-get install -y -qq --no-install-recommends make >/dev/null
      cd /root/project && exec make "$@"' bash "$@"
fi

[ "$(id -u)" -eq 0 ] || { echo "test-fresh.sh: needs root (debootstrap, mounts, chroot): run 'sudo make test-fresh'" >&2; exit 3; }
scripts/deps.sh fresh

mirror() {
  # The first Debian mirror this machine's apt uses for $SUITE: deb822 .sources stanzas, then one-line .list entries.
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v suite="$SUITE" 'BEGIN { RS = ""; FS = "\n" }
      { types = uris = suites = ""; enabled = "yes"
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^[ \t]*#/) continue
          key = tolower($i); sub(/:.*/, "", key); val = substr($i, index($i, ":") + 1); gsub(/^[ \t]+|[ \t]+$/, "", val)
          if (key == "types") types = val; else if (key == "uris") uris = val
          else if (key == "suites") suites = val; else if (key == "enabled") enabled = tolower(val)
        }
        if (enabled != "no" && (" " types " ") ~ / deb / && (" " suites " ") ~ (" " suite " ")) { split(uris, u, " "); print u[1]; exit }
      }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk -v suite="$SUITE" '$1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } if ($(i + 1) == suite) { print $i; exit } }' "$f"
  done
}
MIRROR=$(mirror | head -n1)
[ -n "$MIRROR" ] || { echo "test-fresh.sh: no Debian '$SUITE' mirror in this machine's apt sources (/etc/apt/sources.list*)" >&2; exit 4; }

mkdir -p "$WORK"
BASE=$WORK/base-$SUITE
if [ ! -e "$BASE/.complete" ]; then
  echo "test-fresh: debootstrap --variant=minbase $SUITE (this machine's mirror), once; kept at $BASE" >&2
  rm -rf "$BASE.partial"
  debootstrap --variant=minbase "$SUITE" "$BASE.partial" "$MIRROR" > "$WORK/debootstrap.log" 2>&1 \
    || { echo "test-fresh.sh: debootstrap failed; see $WORK/debootstrap.log" >&2; tail -5 "$WORK/debootstrap.log" >&2; exit 1; }
  touch "$BASE.partial/.complete"
  mv "$BASE.partial" "$BASE"
fi

RUN=$(mktemp -d "$WORK/run-XXXXXX")
echo "test-fresh: running in $RUN (log: $RUN/fresh.log)" >&2
set +e
# A private mount namespace; HYPERMESH_FRESH_PID_NS=1 adds a PID namespace, as a container has (then /proc/1 is the
# root's own first process, and eBPF programs, which see the kernel's global PIDs, disagree with the tests' PIDs).
namespaces=(--mount --propagation private)
[ -z "${HYPERMESH_FRESH_PID_NS:-}" ] || namespaces+=(--pid --fork)
unshare "${namespaces[@]}" "$REPO/scripts/test-fresh.sh" --inside "$RUN" "$BASE" "${@:-test}" 2>&1 | tee "$RUN/fresh.log"
status=${PIPESTATUS[0]}
set -e
echo "test-fresh: exit $status; $(grep -E '^=+ .*(passed|failed).* =+$' "$RUN/fresh.log" | tail -n1)" >&2
# The run's layer holds the venv and the installed packages (GBs): kept only when asked.
[ -n "${HYPERMESH_FRESH_KEEP:-}" ] || rm -rf "$RUN/upper" "$RUN/work" "$RUN/root"
exit "$status"
