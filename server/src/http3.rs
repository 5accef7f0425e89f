//! Experimental: HTTP/3 over QUIC (quinn and h3) on the TLS listener's port, over UDP.
//!
//! Requests go through the same application (`App::serve`: every middleware step, the same
//! metrics and logs) as on the other listeners; only the framing differs. A connection is closed
//! by quinn after `connections.idle_timeout_ms` without packets, by GOAWAY after
//! `connections.max_requests` requests, and by GOAWAY when the server drains, which lets the
//! requests already sent finish. The TLS listener's responses carry `Alt-Svc: h3=":PORT"` so
//! that browsers and clients that know HTTP/3 can move to it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{HeaderValue, Request};
use bytes::{Buf, Bytes};
use h3::server::RequestStream;
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, watch};

use crate::app::App;
use crate::config::Config;
use crate::connection::{Closed, Connections, Stop};
use crate::metrics::Protocol;
use crate::state::Lifecycle;
use crate::tls::{ALPN_H3, CertStore, TlsError};

#[derive(Debug, thiserror::Error)]
pub enum Http3Error {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("QUIC settings: {0}")]
    Quic(String),
    #[error("listen on {addr} (UDP): {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// Binds the QUIC endpoint on `addr` (the TLS listener's address, so the port is the one
/// `Alt-Svc` names).
pub fn bind(
    config: &Config,
    store: &Arc<CertStore>,
    addr: SocketAddr,
) -> Result<quinn::Endpoint, Http3Error> {
    let mut tls = store.server_config(&[ALPN_H3])?;
    tls.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| Http3Error::Quic(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    let idle = Duration::from_millis(config.connections.idle_timeout_ms);
    transport.max_idle_timeout(Some(idle.try_into().map_err(|e| Http3Error::Quic(format!("{e}")))?));
    transport.max_concurrent_bidi_streams(config.http2.max_concurrent_streams.into());
    server.transport_config(Arc::new(transport));
    quinn::Endpoint::server(server, addr).map_err(|source| Http3Error::Bind { addr, source })
}

/// `Alt-Svc` advertising HTTP/3 on `port` for a day.
pub fn alt_svc(port: u16) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("h3=\":{port}\"; ma=86400")).ok()
}

/// Accepts QUIC connections until `stop` leaves `Serving`; each takes a permit of
/// `connections`, like a TCP connection.
pub async fn accept_until(
    endpoint: quinn::Endpoint,
    app: App,
    connections: &Connections,
    mut stop: watch::Receiver<Stop>,
) {
    loop {
        let Some(permit) = connections.permit(&mut stop).await else { break };
        let incoming = tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(i) => i,
                None => break,
            },
            _ = stop.wait_for(|s| *s != Stop::Serving) => break,
        };
        tokio::spawn(serve_one(incoming, app, stop.clone(), permit));
    }
    // New connections are refused from here; open ones finish as the module says.
    endpoint.set_server_config(None);
}

async fn serve_one(
    incoming: quinn::Incoming,
    app: App,
    stop: watch::Receiver<Stop>,
    _permit: OwnedSemaphorePermit,
) {
    let metrics = &app.state().metrics;
    metrics.connections_open.inc();
    let reason = serve_connection(incoming, app, stop).await;
    metrics.connection_closed(reason);
    metrics.connections_open.dec();
}

async fn serve_connection(incoming: quinn::Incoming, app: App, mut stop: watch::Receiver<Stop>) -> Closed {
    let state = app.state();
    let config = state.config.load();
    let handshake = Duration::from_millis(config.connections.header_read_timeout_ms);
    let max_requests = config.connections.max_requests;
    drop(config);
    let quic = match tokio::time::timeout(handshake, incoming).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            state.metrics.tls_handshake_failures.inc();
            tracing::debug!(error = %e, "QUIC handshake failed");
            return Closed::handshake;
        }
        Err(_) => {
            state.metrics.tls_handshake_failures.inc();
            return Closed::header_timeout;
        }
    };
    let mut conn = match h3::server::Connection::<_, Bytes>::new(h3_quinn::Connection::new(quic)).await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "HTTP/3 connection setup failed");
            return Closed::error;
        }
    };
    state.metrics.connection_opened(Protocol::h3);
    let mut served: u64 = 0;
    // The reason a GOAWAY was sent for.
    let mut closing: Option<Closed> = None;
    loop {
        let draining = *stop.borrow() != Stop::Serving || state.lifecycle() == Lifecycle::Draining;
        if closing.is_none() {
            let reason = if draining {
                Some(Closed::drain)
            } else if max_requests > 0 && served >= max_requests {
                Some(Closed::max_requests)
            } else {
                None
            };
            if let Some(reason) = reason {
                // The requests already accepted finish (h3 puts the last accepted stream's id
                // plus this count in the GOAWAY, and streams below it are served); the client
                // opens a new connection for the next ones.
                if conn.shutdown(1).await.is_err() {
                    return reason;
                }
                closing = Some(reason);
            }
        }
        let accepted = tokio::select! {
            accepted = conn.accept() => accepted,
            changed = stop.changed() => match changed.map(|()| *stop.borrow_and_update()) {
                Ok(Stop::Now) | Err(_) => return Closed::shutdown,
                Ok(_) => continue,
            },
        };
        match accepted {
            Ok(Some(resolver)) => {
                served += 1;
                tokio::spawn(async move {
                    match resolver.resolve_request().await {
                        Ok((req, stream)) => answer(app, req, stream).await,
                        Err(e) => tracing::debug!(error = %e, "HTTP/3 request head refused"),
                    }
                });
            }
            Ok(None) => return closing.unwrap_or(Closed::client),
            Err(e) if e.is_h3_no_error() => return closing.unwrap_or(Closed::client),
            Err(
                h3::error::ConnectionError::Timeout { .. }
                | h3::error::ConnectionError::Remote { 0: h3::quic::ConnectionErrorIncoming::Timeout, .. },
            ) => return Closed::idle,
            Err(e) => {
                tracing::debug!(error = %e, "HTTP/3 connection ended with an error");
                return closing.unwrap_or(Closed::error);
            }
        }
    }
}

type Stream = RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

/// Serves one request stream: the body as an `http_body::Body`, the response streamed back.
async fn answer(app: App, req: Request<()>, stream: Stream) {
    let (mut send, recv) = stream.split();
    let res = app.serve(req.map(|()| RequestBody { stream: recv, done: false })).await;
    let (parts, mut body) = res.into_parts();
    if let Err(e) = send.send_response(axum::http::Response::from_parts(parts, ())).await {
        tracing::debug!(error = %e, "HTTP/3 response head not sent");
        return;
    }
    while let Some(frame) = body.frame().await {
        let sent = match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => send.send_data(data).await,
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => send.send_trailers(trailers).await,
                    Err(_) => Ok(()),
                },
            },
            Err(e) => {
                tracing::debug!(error = %e, "HTTP/3 response body failed");
                return;
            }
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "HTTP/3 response body not sent");
            return;
        }
    }
    if let Err(e) = send.finish().await {
        tracing::debug!(error = %e, "HTTP/3 response not finished");
    }
}

/// An HTTP/3 request's body, read as the application reads any body.
pub struct RequestBody {
    stream: RequestStream<h3_quinn::RecvStream, Bytes>,
    done: bool,
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = h3::error::StreamError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.stream.poll_recv_data(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Some(mut data))) => {
                let bytes = data.copy_to_bytes(data.remaining());
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
            Poll::Ready(Ok(None)) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Err(e)) => {
                self.done = true;
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}
