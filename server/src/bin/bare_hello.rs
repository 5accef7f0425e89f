//! A bare hyper hello-world: the baseline `scripts/bench-refserver` compares `refserver` with.
//! Same runtime flavour, same HTTP/1 server stack, no middleware.
//!
//! `bare-hello [ADDR] [--refserver-headers]`: with the flag, every response also carries the
//! headers refserver adds (content type, request id, trace context, version) as fixed values, so
//! the benchmark can tell the cost of the bytes on the wire from the cost of making them.

use std::convert::Infallible;
use std::net::SocketAddr;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::HeaderValue;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

async fn hello(
    with_headers: bool,
    _: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut res = Response::new(Full::new(Bytes::from_static(b"{\"message\":\"\",\"version\":\"0.1.0\"}")));
    if with_headers {
        let headers = res.headers_mut();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("x-request-id", HeaderValue::from_static("dfc64ee8072252715503e89ef422691f"));
        headers.insert(
            "traceparent",
            HeaderValue::from_static("00-d22770483a258f67207da9b7595a223f-8a4ca4ce9d7402d1-01"),
        );
        headers.insert("x-refserver-version", HeaderValue::from_static("0.1.0"));
    }
    Ok(res)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut addr = "127.0.0.1:8090".to_string();
    let mut with_headers = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--refserver-headers" => with_headers = true,
            other => addr = other.to_string(),
        }
    }
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("address: {e}")))?;
    let listener = TcpListener::bind(addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let service = service_fn(move |req| hello(with_headers, req));
            if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                eprintln!("connection: {e}");
            }
        });
    }
}
