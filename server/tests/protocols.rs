//! The protocols against the real binary, each with a real client: HTTP/1.1 and HTTP/2 over TLS
//! 1.3 (chosen by ALPN), h2c with prior knowledge on the plain listener, and the experimental
//! HTTP/3 listener; the certificate reloaded when its files change; the same middleware and
//! metrics on every protocol.

mod common;

use std::future::poll_fn;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use common::{Server, wait_for, write_atomically};
use reqwest::Version;
use rustls_pki_types::pem::PemObject;

/// A self-signed certificate for `localhost` and its key, as PEM.
struct Pem {
    cert: String,
    key: String,
}

fn self_signed() -> Pem {
    let key = rcgen::KeyPair::generate().expect("key pair");
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    let cert = params.self_signed(&key).expect("self-signed certificate");
    Pem { cert: cert.pem(), key: key.serialize_pem() }
}

struct TlsServer {
    server: Server,
    dir: tempfile::TempDir,
    pem: Pem,
}

impl TlsServer {
    async fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let pem = self_signed();
        std::fs::write(dir.path().join("tls.crt"), &pem.cert).expect("write cert");
        std::fs::write(dir.path().join("tls.key"), &pem.key).expect("write key");
        let cert = format!("tls.cert_file={}", dir.path().join("tls.crt").display());
        let key = format!("tls.key_file={}", dir.path().join("tls.key").display());
        let mut args = vec!["--set", &cert, "--set", &key, "--set", "tls.listen=127.0.0.1:0"];
        for a in extra {
            args.extend(["--set", a]);
        }
        let server = Server::start(&args, &[]).await;
        TlsServer { server, dir, pem }
    }

    fn url(&self, path: &str) -> String {
        let port = self.server.tls_addr.expect("the TLS listener runs").port();
        format!("https://localhost:{port}{path}")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A client that trusts only `cert`, and connects to `localhost` on loopback.
fn https_client(cert: &str, http1_only: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .https_only(true)
        .tls_certs_only([reqwest::Certificate::from_pem(cert.as_bytes()).expect("certificate")]);
    if http1_only {
        b = b.http1_only();
    }
    b.build().expect("client")
}

#[tokio::test]
async fn alpn_picks_http2_or_http11_over_tls_13_with_the_same_middleware_and_metrics() {
    let t = TlsServer::start(&["tls.http3=true"]).await;
    let h2 = https_client(&t.pem.cert, false);
    let r = h2.get(t.url("/api/v1/echo?message=over-h2")).send().await.expect("h2 request");
    assert_eq!(r.version(), Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"), "the request-id step ran");
    assert!(r.headers().contains_key("x-refserver-version"));
    let port = t.server.tls_addr.expect("tls").port();
    assert_eq!(r.headers()["alt-svc"], format!("h3=\":{port}\"; ma=86400").as_str());
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["message"], "over-h2");

    let h1 = https_client(&t.pem.cert, true);
    let r = h1.post(t.url("/api/v1/echo")).body("over-https1").send().await.expect("h1 request");
    assert_eq!(r.version(), Version::HTTP_11);
    assert_eq!(r.text().await.expect("body"), "over-https1");
    // A refused request is the same JSON error on both.
    let r = h2.get(t.url("/api/v1/echo?message=%ZZ")).send().await.expect("h2 request");
    assert_eq!(r.status(), 400);
    assert!(r.text().await.expect("body").contains("message"));

    let s = &t.server;
    assert_eq!(s.metric("refserver_connections_opened_total{protocol=\"h2\"}").await, 1.0);
    assert_eq!(s.metric("refserver_connections_opened_total{protocol=\"https1\"}").await, 1.0);
    let served = s.metric("http_server_request_duration_seconds_count{http_request_method=\"GET\",http_route=\"/api/v1/echo\",http_response_status_code=\"200\"}").await;
    assert_eq!(served, 1.0, "the h2 request is in the request histogram");

    // TLS 1.2 is refused: the listener is TLS 1.3 only.
    let tls12 = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([reqwest::Certificate::from_pem(t.pem.cert.as_bytes()).expect("certificate")])
        .tls_version_max(reqwest::tls::Version::TLS_1_2)
        .build()
        .expect("client");
    assert!(tls12.get(t.url("/healthz")).send().await.is_err(), "a TLS 1.2 client is refused");
    wait_for("the refused handshake is counted", || async {
        s.metric("refserver_connections_closed_total{reason=\"handshake\"}").await >= 1.0
    })
    .await;
}

#[tokio::test]
async fn h2c_with_prior_knowledge_is_served_beside_http11_when_turned_on() {
    let s = Server::start(&["--set", "http2.h2c=true"], &[]).await;
    let h2c = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().expect("client");
    let r = h2c.get(s.url("/api/v1/echo?message=h2c")).send().await.expect("h2c request");
    assert_eq!(r.version(), Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let r = s.get("/api/v1/echo?message=h1").await;
    assert_eq!(r.version(), Version::HTTP_11);
    assert_eq!(s.metric("refserver_connections_opened_total{protocol=\"h2c\"}").await, 1.0);

    // Off by default: a prior-knowledge client gets no HTTP/2 answer.
    let off = Server::start(&[], &[]).await;
    assert!(h2c.get(off.url("/healthz")).send().await.is_err());
}

#[tokio::test]
async fn an_http2_connection_closes_by_goaway_after_max_requests_without_failing_one() {
    let t = TlsServer::start(&["connections.max_requests=2"]).await;
    let h2 = https_client(&t.pem.cert, false);
    for i in 0..5 {
        let r = h2.get(t.url(&format!("/api/v1/echo?message={i}"))).send().await.expect("request");
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), Version::HTTP_2);
        assert!(!r.headers().contains_key("connection"), "no connection header in HTTP/2");
    }
    let s = &t.server;
    wait_for("two connections closed at their limit", || async {
        s.metric("refserver_connections_closed_total{reason=\"max_requests\"}").await >= 2.0
    })
    .await;
    // A stream the client opened before the GOAWAY reached it is still served on the old
    // connection, so the five requests may take two connections or three.
    assert!(s.metric("refserver_connections_opened_total{protocol=\"h2\"}").await >= 2.0);
}

#[tokio::test]
async fn sigterm_lets_an_http2_request_in_flight_finish_then_the_server_exits() {
    let mut t = TlsServer::start(&["fault.latency_ms=1000"]).await;
    let h2 = https_client(&t.pem.cert, false);
    let url = t.url("/api/v1/echo?message=in-flight");
    let in_flight = tokio::spawn(async move { h2.get(url).send().await });
    let s = &t.server;
    wait_for("the request is in flight", || async { s.metric("refserver_requests_in_flight").await >= 1.0 })
        .await;
    t.server.signal("TERM");
    let r = in_flight.await.expect("join").expect("answered during the drain");
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), Version::HTTP_2);
    assert_eq!(t.server.wait_exit().await, Some(0));
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart_and_a_bad_one_is_refused() {
    let t = TlsServer::start(&["tls.reload_interval_ms=100"]).await;
    let renewed = self_signed();
    let old_client = https_client(&t.pem.cert, false);
    let new_client = https_client(&renewed.cert, false);
    assert!(new_client.get(t.url("/healthz")).send().await.is_err(), "the renewed one is not served yet");
    write_atomically(&t.path("tls.key"), &renewed.key);
    write_atomically(&t.path("tls.crt"), &renewed.cert);
    wait_for("the renewed certificate is served", || async {
        new_client.get(t.url("/healthz")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(old_client.get(t.url("/healthz")).send().await.is_err(), "the old one is gone");

    // A key that is not the certificate's: refused, counted, and the loaded pair stays.
    write_atomically(&t.path("tls.key"), &self_signed().key);
    let s = &t.server;
    wait_for("the mismatched key is refused", || async {
        s.metric("refserver_tls_reloads_total{result=\"rejected\"}").await >= 1.0
    })
    .await;
    let r = new_client.get(t.url("/healthz")).send().await.expect("still served");
    assert_eq!(r.status(), 200);
    assert_eq!(s.metric("refserver_tls_reloads_total{result=\"applied\"}").await, 1.0);
}

#[tokio::test]
async fn tls_settings_that_cannot_work_are_refused_naming_the_field() {
    let f = Server::fail(&["--set", "tls.cert_file=/nonexistent.crt"], &[]).await;
    assert_eq!(f.code, Some(2));
    assert!(f.stderr.contains("tls.key_file"), "{}", f.stderr);
    let f = Server::fail(&["--set", "tls.http3=true"], &[]).await;
    assert_eq!(f.code, Some(2));
    assert!(f.stderr.contains("tls.http3"), "{}", f.stderr);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("tls.crt"), "not a certificate").expect("write");
    std::fs::write(dir.path().join("tls.key"), self_signed().key).expect("write");
    let cert = format!("tls.cert_file={}", dir.path().join("tls.crt").display());
    let key = format!("tls.key_file={}", dir.path().join("tls.key").display());
    let f = Server::fail(
        &["--listen", "127.0.0.1:0", "--set", &cert, "--set", &key, "--set", "tls.listen=127.0.0.1:0"],
        &[],
    )
    .await;
    assert_eq!(f.code, Some(2));
    assert!(f.stderr.contains("tls.cert_file"), "{}", f.stderr);
}

// === HTTP/3 ===

/// One HTTP/3 request with quinn and h3, trusting only `cert`: the status, the headers' names
/// and the body.
async fn h3_request(
    addr: std::net::SocketAddr,
    cert: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, Vec<String>, Vec<u8>) {
    let mut roots = rustls::RootCertStore::empty();
    let der = rustls_pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).expect("cert der");
    roots.add(der).expect("root");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic client config");
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let conn = endpoint.connect(addr, "localhost").expect("connect").await.expect("QUIC handshake");
    let (mut driver, mut send) = h3::client::new(h3_quinn::Connection::new(conn)).await.expect("h3 client");
    let drive = tokio::spawn(async move { poll_fn(|cx| driver.poll_close(cx)).await });
    let req = http::Request::builder()
        .method(method)
        .uri(format!("https://localhost:{}{path}", addr.port()))
        .body(())
        .expect("request");
    let mut stream = send.send_request(req).await.expect("send request");
    if !body.is_empty() {
        stream.send_data(Bytes::copy_from_slice(body)).await.expect("send body");
    }
    stream.finish().await.expect("finish");
    let res = stream.recv_response().await.expect("response");
    let mut out = Vec::new();
    while let Some(mut chunk) = stream.recv_data().await.expect("data") {
        let bytes = chunk.copy_to_bytes(chunk.remaining());
        out.extend_from_slice(&bytes);
    }
    let names = res.headers().keys().map(|k| k.to_string()).collect();
    drop(send);
    drive.abort();
    endpoint.close(0u32.into(), b"done");
    (res.status().as_u16(), names, out)
}

#[tokio::test]
async fn http3_serves_the_same_application_when_turned_on() {
    let t = TlsServer::start(&["tls.http3=true"]).await;
    let addr = t.server.tls_addr.expect("tls");
    let (status, headers, body) =
        h3_request(addr, &t.pem.cert, "GET", "/api/v1/echo?message=over-h3", b"").await;
    assert_eq!(status, 200);
    assert!(headers.iter().any(|h| h == "x-request-id"), "{headers:?}");
    let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(json["message"], "over-h3");
    let (status, _, body) = h3_request(addr, &t.pem.cert, "POST", "/api/v1/echo", b"a body over QUIC").await;
    assert_eq!(status, 200);
    assert_eq!(body, b"a body over QUIC");
    let s = &t.server;
    assert_eq!(s.metric("refserver_connections_opened_total{protocol=\"h3\"}").await, 2.0);
    let served = s.metric("http_server_request_duration_seconds_count{http_request_method=\"POST\",http_route=\"/api/v1/echo\",http_response_status_code=\"200\"}").await;
    assert_eq!(served, 1.0);
}
