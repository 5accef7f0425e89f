//! A bare hyper hello-world: the baseline `scripts/bench-refserver` compares `refserver` with.
//! Same runtime flavour, same HTTP/1 server stack, no middleware.
//!
//! `bare-hello [ADDR] [--refserver-headers] [--tls CERT KEY]`: with the flag, every response also
//! carries the headers refserver adds (content type, request id, trace context, version) as fixed
//! values, so the benchmark can tell the cost of the bytes on the wire from the cost of making
//! them. With `--tls`, it serves HTTP/2 over TLS 1.3 instead (ALPN `h2`), the baseline of
//! `scripts/bench-refserver-h2.sh`.

use std::convert::Infallible;
use std::net::SocketAddr;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::HeaderValue;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
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

fn invalid(what: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, what)
}

/// TLS 1.3 offering only `h2`, from PEM files.
fn tls_acceptor(cert: &str, key: &str) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| invalid(format!("{cert}: {e}")))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| invalid(format!("{key}: {e}")))?;
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|e| invalid(format!("TLS: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut addr = "127.0.0.1:8090".to_string();
    let mut with_headers = false;
    let mut tls = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--refserver-headers" => with_headers = true,
            "--tls" => match (args.next(), args.next()) {
                (Some(cert), Some(key)) => tls = Some(tls_acceptor(&cert, &key)?),
                _ => return Err(invalid("--tls needs CERT and KEY".into())),
            },
            other => addr = other.to_string(),
        }
    }
    let addr: SocketAddr = addr.parse().map_err(|e| invalid(format!("address: {e}")))?;
    let listener = TcpListener::bind(addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| hello(with_headers, req));
            let served = match tls {
                Some(tls) => match tls.accept(stream).await {
                    Ok(stream) => {
                        http2::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                    }
                    Err(e) => return eprintln!("TLS: {e}"),
                },
                None => http1::Builder::new().serve_connection(TokioIo::new(stream), service).await,
            };
            if let Err(e) = served {
                eprintln!("connection: {e}");
            }
        });
    }
}
