// fasthttp answering refserver's headers and body as fixed values, no middleware: the playbook's
// fastest stack, the same baseline as `bare-hello --refserver-headers`.
//
//	fasthttp ADDR
package main

import (
	"log"
	"os"

	"github.com/valyala/fasthttp"
)

var body = []byte(`{"message":"","version":"0.1.0"}`)

func handle(ctx *fasthttp.RequestCtx) {
	h := &ctx.Response.Header
	h.SetContentType("application/json")
	h.Set("x-request-id", "dfc64ee8072252715503e89ef422691f")
	h.Set("traceparent", "00-d22770483a258f67207da9b7595a223f-8a4ca4ce9d7402d1-01")
	h.Set("x-refserver-version", "0.1.0")
	ctx.SetBody(body)
}

func main() {
	addr := "127.0.0.1:8090"
	if len(os.Args) > 1 {
		addr = os.Args[1]
	}
	server := &fasthttp.Server{Handler: handle, NoDefaultServerHeader: true, NoDefaultDate: false}
	log.Fatal(server.ListenAndServe(addr))
}
