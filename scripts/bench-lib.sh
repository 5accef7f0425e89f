# Helpers shared by the refserver benchmarks (bench-refserver.sh, bench-refserver-h2.sh).
# Sourced after lib.sh.

# Builds the Go servers and the open-loop generator from the Go module proxy into the cache;
# sets $gobin and $goversions.
build_go_servers() {
  command -v go >/dev/null || die "Go is required to build the Go servers (https://go.dev/doc/install)"
  local gokey
  gokey=$( (go version; cat bench/go/go.mod bench/go/go.sum bench/go/*/main.go) | sha256sum | cut -c1-12)
  gobin="$ROLLGATE_CACHE/bench-go-$gokey"
  if [ ! -x "$gobin/openloop" ]; then
    log "building the Go servers and the open-loop generator (go build, cached in $gobin)"
    mkdir -p "$gobin"
    for b in nethttp fasthttp openloop; do
      (cd bench/go && go build -trimpath -o "$gobin/$b.partial" "./$b") && mv "$gobin/$b.partial" "$gobin/$b"
    done
  fi
  goversions=$(cd bench/go && go list -m -f '{{.Path}} {{.Version}}' github.com/prometheus/client_golang github.com/valyala/fasthttp | tr '\n' ';')
}

# A process' CPU time (user + system) in clock ticks, from /proc.
cpu_of() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# The median of column $2 of file $1.
median() { sort -n -k"$2" "$1" | awk -v c="$2" '{v[NR]=$c} END {print v[int((NR+1)/2)]}'; }

# "met" or "missed": value $1 against goal $2 with operator $3 (<= or >=).
verdict() { awk -v v="$1" -v g="$2" -v op="$3" 'BEGIN {ok = (op == "<=") ? v <= g : v >= g; print ok ? "met" : "missed"}'; }
