// CoreDNS built from its Go module with only the plugins the suite's cluster DNS uses (the
// upstream main links every plugin, cloud providers included). This is CoreDNS's documented way
// to choose plugins at compile time: import them and call coremain.Run.
// Built by e2e/scripts/build-toolchain.sh.
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() {
	coremain.Run()
}
