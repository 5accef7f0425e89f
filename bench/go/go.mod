// The playbook's own stacks that `make bench` measures refserver against, and the open-loop load
// generator it measures CPU per request with. Built by scripts/bench-refserver.sh into the cache,
// never part of the repository's build.
module rollgate.dev/bench/go

go 1.26.0

require (
	github.com/prometheus/client_golang v1.25.0
	github.com/valyala/fasthttp v1.79.0
)

require (
	github.com/beorn7/perks v1.0.1 // indirect
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/klauspost/compress v1.20.4 // indirect
	github.com/molecule-man/go-brrr v1.3.1 // indirect
	github.com/munnerz/goautoneg v0.0.0-20191010083416-a7dc8b61c822 // indirect
	github.com/prometheus/client_model v0.6.3 // indirect
	github.com/prometheus/common v0.72.0 // indirect
	github.com/prometheus/procfs v0.22.0 // indirect
	github.com/valyala/bytebufferpool v1.0.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)
