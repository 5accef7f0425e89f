// Go's net/http with the playbook's middleware, refserver's /api/v1/echo: a request id, W3C trace
// context, panic recovery, and a client_golang histogram labelled as refserver's
// (http_request_method, http_route, http_response_status_code), on the same buckets.
//
//	nethttp ADDR [CERT KEY]
//
// With CERT and KEY it serves TLS, where net/http speaks HTTP/2 by ALPN (TLS 1.3 only, as
// refserver).
package main

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"log"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

var duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
	Name:    "http_server_request_duration_seconds",
	Help:    "Duration of HTTP server requests",
	Buckets: []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 10},
}, []string{"http_request_method", "http_route", "http_response_status_code"})

type recorder struct {
	http.ResponseWriter
	status int
}

func (r *recorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// traceparent continues the caller's trace with a new span id, or starts one.
func traceparent(in string) string {
	if len(in) == 55 && in[2] == '-' && in[35] == '-' && in[52] == '-' {
		return "00-" + in[3:35] + "-" + randomHex(8) + "-" + in[53:]
	}
	return "00-" + randomHex(16) + "-" + randomHex(8) + "-01"
}

func middleware(route string, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w, status: http.StatusOK}
		id := r.Header.Get("x-request-id")
		if id == "" {
			id = randomHex(16)
		}
		h := w.Header()
		h.Set("x-request-id", id)
		h.Set("traceparent", traceparent(r.Header.Get("traceparent")))
		h.Set("x-refserver-version", "0.1.0")
		defer func() {
			if p := recover(); p != nil {
				log.Printf("panic: %v", p)
				rec.WriteHeader(http.StatusInternalServerError)
			}
			duration.WithLabelValues(r.Method, route, strconv.Itoa(rec.status)).Observe(time.Since(start).Seconds())
		}()
		next(rec, r)
	}
}

type reply struct {
	Message string `json:"message"`
	Version string `json:"version"`
}

func echo(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("content-type", "application/json")
	_ = json.NewEncoder(w).Encode(reply{Message: r.URL.Query().Get("message"), Version: "0.1.0"})
}

func main() {
	addr := "127.0.0.1:8090"
	if len(os.Args) > 1 {
		addr = os.Args[1]
	}
	prometheus.MustRegister(duration)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/echo", middleware("/api/v1/echo", echo))
	mux.Handle("GET /metrics", promhttp.Handler())
	if len(os.Args) > 3 {
		srv := &http.Server{Addr: addr, Handler: mux, TLSConfig: &tls.Config{MinVersion: tls.VersionTLS13}}
		log.Fatal(srv.ListenAndServeTLS(os.Args[2], os.Args[3]))
	}
	log.Fatal(http.ListenAndServe(addr, mux))
}
