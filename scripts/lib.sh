# Shared shell helpers for rollgate's scripts. Sourced, not run.

# Slow artefacts live outside the repository, keyed by version, so a warm machine is fast and a
# new one is still correct.
: "${ROLLGATE_CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}/rollgate}"
export ROLLGATE_CACHE
# The cargo target directory, keyed by the compiler version.
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
  CARGO_TARGET_DIR="$ROLLGATE_CACHE/target-$(rustc --version | tr -cs 'a-zA-Z0-9.' '-' | sed 's/-$//')"
  export CARGO_TARGET_DIR
fi

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Installs Debian packages that are missing (root, or sudo when available).
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]} (apt)"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Waits until a URL answers 2xx, or fails after $2 seconds.
wait_http() {
  local url=$1 secs=${2:-30} i=0
  until curl -fsS -o /dev/null "$url" 2>/dev/null; do
    i=$((i + 1))
    [ "$i" -gt $((secs * 10)) ] && die "$url did not answer within ${secs}s"
    sleep 0.1
  done
}

# Reads the listen address refserver logs at start from its JSON log file.
listen_addr_from_log() {
  local file=$1 secs=${2:-30} i=0 addr=""
  while [ -z "$addr" ]; do
    addr=$(grep -o '"listen":"[^"]*"' "$file" 2>/dev/null | head -n1 | cut -d'"' -f4)
    [ -n "$addr" ] && break
    i=$((i + 1))
    [ "$i" -gt $((secs * 10)) ] && die "no listen address in $file within ${secs}s"
    sleep 0.1
  done
  printf '%s\n' "$addr"
}
