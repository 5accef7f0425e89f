//! The profiling listener against the real binary: a CPU profile and a heap profile read back as
//! pprof protobuf with a known symbol in them, allocator statistics on `/metrics`, and nothing of
//! it on the public port.

mod common;

use std::io::Read;

use common::Server;
use pprof::protos::{Message, Profile};

async fn debug_get(s: &Server, path: &str) -> reqwest::Response {
    let addr = s.debug_addr.expect("the profiling listener runs");
    s.client.get(format!("http://{addr}{path}")).send().await.expect("request")
}

fn has_function(profile: &Profile, needle: &str) -> bool {
    profile.string_table.iter().any(|s| s.contains(needle))
}

#[tokio::test]
async fn a_cpu_profile_of_a_busy_server_names_the_function_that_burns_the_cpu() {
    let mut s = Server::start(&["--set", "debug.listen=127.0.0.1:0"], &[]).await;
    // CPU work on the pool for as long as the profile runs.
    let (client, url) = (s.client.clone(), s.url("/api/v1/work?cost_ms=50"));
    let load = tokio::spawn(async move {
        loop {
            let _ = client.get(&url).send().await;
        }
    });
    let (client, addr) = (s.client.clone(), s.debug_addr.expect("the profiling listener runs"));
    let profiling = tokio::spawn(async move {
        client.get(format!("http://{addr}/debug/pprof/profile?seconds=2")).send().await
    });
    // A second profile while one runs is refused.
    s.wait_log("CPU profile started").await;
    assert_eq!(debug_get(&s, "/debug/pprof/profile?seconds=1").await.status(), 409);
    let r = profiling.await.expect("join").expect("profile request");
    load.abort();
    assert_eq!(r.status(), 200);
    let bytes = r.bytes().await.expect("body");
    let profile = Profile::decode(bytes.as_ref()).expect("pprof protobuf");
    assert!(!profile.sample.is_empty(), "samples were taken");
    assert!(has_function(&profile, "spin_for"), "the pool's CPU loop is in the profile");
    assert_eq!(s.metric("refserver_profiles_taken_total").await, 1.0);

    let r = debug_get(&s, "/debug/pprof/profile?seconds=0").await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.expect("body").contains("seconds"));
    // Never on the public port.
    assert_eq!(s.get("/debug/pprof/profile?seconds=1").await.status(), 404);
}

#[tokio::test]
async fn a_heap_profile_names_live_allocations_once_heap_profiling_is_on() {
    // A sample per KiB instead of the default 512 KiB (jemalloc's own variable, read after the
    // built-in options): a test server's few live allocations are then sure to be sampled.
    let s = Server::start(
        &["--set", "debug.listen=127.0.0.1:0", "--set", "debug.heap_profiling=true"],
        &[("_RJEM_MALLOC_CONF", "lg_prof_sample:10")],
    )
    .await;
    // Keep-alive connections at once: their buffers are live when the profile is taken.
    let posts = (0..20).map(|_| s.client.post(s.url("/api/v1/echo")).body(vec![b'x'; 30_000]).send());
    for r in futures::future::join_all(posts).await {
        assert_eq!(r.expect("request").status(), 200);
    }
    let r = debug_get(&s, "/debug/pprof/heap").await;
    assert_eq!(r.status(), 200);
    let gz = r.bytes().await.expect("body");
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gz.as_ref()).read_to_end(&mut raw).expect("gzip");
    let profile = Profile::decode(raw.as_slice()).expect("pprof protobuf");
    assert!(!profile.sample.is_empty(), "live allocations were sampled");
    assert!(has_function(&profile, "refserver"), "refserver's own frames are named");
    assert!(s.metric("refserver_allocator_bytes{kind=\"allocated\"}").await > 0.0);
    assert!(s.metric("refserver_allocator_bytes{kind=\"resident\"}").await > 0.0);
}

#[tokio::test]
async fn the_heap_profile_says_how_to_turn_it_on_and_bad_addresses_are_refused() {
    let s = Server::start(&["--set", "debug.listen=127.0.0.1:0"], &[]).await;
    let r = debug_get(&s, "/debug/pprof/heap").await;
    assert_eq!(r.status(), 409);
    assert!(r.text().await.expect("body").contains("debug.heap_profiling"));

    let f = Server::fail(&["--set", "debug.listen=localhost"], &[]).await;
    assert_eq!(f.code, Some(2));
    assert!(f.stderr.contains("debug.listen"), "{}", f.stderr);
    let f = Server::fail(&["--listen", "127.0.0.1:7070", "--set", "debug.listen=127.0.0.1:7070"], &[]).await;
    assert_eq!(f.code, Some(2));
    assert!(f.stderr.contains("debug.listen"), "{}", f.stderr);
}

#[tokio::test]
async fn a_profile_being_taken_does_not_hold_up_shutdown() {
    let mut s = Server::start(&["--set", "debug.listen=127.0.0.1:0"], &[]).await;
    let (client, addr) = (s.client.clone(), s.debug_addr.expect("the profiling listener runs"));
    // A minute-long profile: longer than the test's deadline for the exit below.
    let _profiling = tokio::spawn(async move {
        client.get(format!("http://{addr}/debug/pprof/profile?seconds=60")).send().await
    });
    s.wait_log("CPU profile started").await;
    s.signal("TERM");
    assert_eq!(s.wait_exit().await, Some(0));
}
