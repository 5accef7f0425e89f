//! The application served in-process on an ephemeral port: what needs a handler the binary does
//! not have (a panicking one).

use std::sync::Arc;

use refserver::app::{App, ExtraHandler};
use refserver::config::Config;
use refserver::connection::Stop;
use refserver::metrics::Metrics;
use refserver::state::{AppState, Lifecycle};

async fn serve(extra: Vec<(&'static str, ExtraHandler)>) -> (String, AppState) {
    let config = Config::default();
    let state = AppState::new(config.clone(), Metrics::new(&config.version)).expect("state");
    state.set_lifecycle(Lifecycle::Ready);
    let app = App::with_api_routes(state.clone(), extra);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (_stop, stop_rx) = tokio::sync::watch::channel(Stop::Serving);
    tokio::spawn(async move {
        let _keep_serving = _stop;
        let connections = refserver::connection::Connections::new(64);
        let transport = refserver::connection::Transport::Plain;
        refserver::connection::accept_until(listener, transport, app, &connections, stop_rx).await
    });
    (format!("http://{addr}"), state)
}

fn boom() -> ExtraHandler {
    Arc::new(|_| Box::pin(async { panic!("handler bug") }))
}

#[tokio::test]
async fn a_panicking_handler_is_a_500_and_the_next_request_succeeds() {
    let (base, state) = serve(vec![("/api/v1/boom", boom())]).await;
    let client = reqwest::Client::builder().no_proxy().build().expect("client");
    let r = client.get(format!("{base}/api/v1/boom")).send().await.expect("request");
    assert_eq!(r.status(), 500);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["error"], "internal");
    assert_eq!(state.metrics.panics.get(), 1);
    let r = client.get(format!("{base}/api/v1/echo?message=still-here")).send().await.expect("request");
    assert_eq!(r.status(), 200);
    assert!(r.text().await.expect("body").contains("still-here"));
    let metrics =
        client.get(format!("{base}/metrics")).send().await.expect("request").text().await.expect("body");
    assert!(
        metrics.contains(
            "http_server_request_duration_seconds_count{http_request_method=\"GET\",http_route=\"/api/v1/boom\",http_response_status_code=\"500\"} 1"
        ),
        "the panic is counted as a 500"
    );
    assert!(metrics.contains("refserver_panics_total 1"));
}

#[tokio::test]
async fn readiness_follows_the_lifecycle() {
    let (base, state) = serve(Vec::new()).await;
    let client = reqwest::Client::builder().no_proxy().build().expect("client");
    assert_eq!(client.get(format!("{base}/readyz")).send().await.expect("r").status(), 200);
    state.set_lifecycle(Lifecycle::Draining);
    let r = client.get(format!("{base}/readyz")).send().await.expect("r");
    assert_eq!(r.status(), 503);
    assert_eq!(r.json::<serde_json::Value>().await.expect("json")["status"], "draining");
    state.set_lifecycle(Lifecycle::Starting);
    assert_eq!(client.get(format!("{base}/readyz")).send().await.expect("r").status(), 503);
    assert_eq!(
        client.get(format!("{base}/healthz")).send().await.expect("r").status(),
        200,
        "liveness is independent"
    );
}
