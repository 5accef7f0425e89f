// An open-loop load generator: requests are due at a fixed rate whatever the server does, each
// one's latency counted from when it was due (no coordinated omission), over keep-alive
// connections. Prints "sent ok p50_ms p99_ms late" on one line.
//
//	openloop URL RATE SECONDS [CONNECTIONS]
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	if len(os.Args) < 4 {
		fmt.Fprintln(os.Stderr, "usage: openloop URL RATE SECONDS [CONNECTIONS]")
		os.Exit(2)
	}
	url := os.Args[1]
	rate, err1 := strconv.Atoi(os.Args[2])
	secs, err2 := strconv.Atoi(os.Args[3])
	conns := 64
	if len(os.Args) > 4 {
		conns, _ = strconv.Atoi(os.Args[4])
	}
	if err1 != nil || err2 != nil || rate <= 0 || secs <= 0 || conns <= 0 {
		fmt.Fprintln(os.Stderr, "RATE, SECONDS and CONNECTIONS must be positive integers")
		os.Exit(2)
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, DisableCompression: true}}
	total := int64(rate * secs)
	interval := time.Second / time.Duration(rate)
	start := time.Now().Add(50 * time.Millisecond)
	var next, ok, late atomic.Int64
	latencies := make([][]time.Duration, conns)
	var wg sync.WaitGroup
	for w := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= total {
					return
				}
				due := start.Add(time.Duration(i) * interval)
				if d := time.Until(due); d > 0 {
					time.Sleep(d)
				} else if d < -10*time.Millisecond {
					late.Add(1)
				}
				resp, err := client.Get(url)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK {
						ok.Add(1)
					}
				}
				latencies[w] = append(latencies[w], time.Since(due))
			}
		}()
	}
	wg.Wait()
	all := slices.Concat(latencies...)
	slices.Sort(all)
	q := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[int(p*float64(len(all)-1))].Microseconds()) / 1000
	}
	fmt.Printf("%d %d %.3f %.3f %d\n", total, ok.Load(), q(0.5), q(0.99), late.Load())
}
