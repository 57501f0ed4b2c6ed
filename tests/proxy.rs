//! Outbound proxies, end to end: natshook delivers through a real CONNECT proxy
//! (tests/common `ConnectProxy`) to real receivers, with the proxy configured per
//! endpoint or taken from the environment.

mod common;

use std::time::Duration;

use async_nats::jetstream;
use common::*;

const PROXY_PASSWORD: &str = "pr0xy-pa55-4d9e";
const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// An https endpoint of the test PKI (mutual TLS) with `extra` TOML lines.
fn tls_endpoint(pki: &Pki, name: &str, url: &str, extra: &str) -> String {
    let d = pki.dir.path().display();
    format!(
        "[[endpoints]]\nname = \"{name}\"\nurl = \"{url}\"\nevents = [\"*\"]\nsecret = \"s\"\nallow_private = true\nca_file = \"{d}/ca.pem\"\ncert_file = \"{d}/client.pem\"\nkey_file = \"{d}/client-key.pem\"\n{extra}\n"
    )
}

fn assert_no_password(natshook: &Natshook, password: &str) {
    let logs = natshook.logs();
    let basic = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, password);
    assert!(!logs.contains(password), "password in the logs:\n{logs}");
    assert!(!logs.contains(&basic[..12]), "encoded password in the logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_receivers_through_connect_proxies_with_and_without_credentials() {
    let pki = pki();
    let (rx_open, rx_auth) = (
        Receiver::start_tls(pki.server.clone()).await,
        Receiver::start_tls(pki.server.clone()).await,
    );
    let open = ConnectProxy::start().await;
    let guarded = ConnectProxy::with_credentials("natshook", PROXY_PASSWORD).await;
    let nats = NatsServer::start();
    let mut config = TestConfig::new(nats.url());
    config.endpoints.push(tls_endpoint(
        &pki,
        "open",
        &rx_open.https_url("/open"),
        &format!("proxy = \"{}\"", open.url()),
    ));
    config.endpoints.push(tls_endpoint(
        &pki,
        "guarded",
        &rx_auth.https_url("/guarded"),
        &format!(
            "proxy = {{ url = \"{}\", username = \"natshook\", password = {{ env = \"PROXY_PASSWORD\" }} }}",
            guarded.url()
        ),
    ));
    let natshook =
        Natshook::start_with(&config.render(), &[("PROXY_PASSWORD", PROXY_PASSWORD)], &[]).await;
    let js = jetstream::new(nats.client().await);
    deliver_leads(&js, &rx_open, 20, "proxied").await;
    rx_auth
        .wait_for(
            Duration::from_secs(20),
            "20 through the guarded proxy",
            |r| r.delivered_ids().len() >= 20,
        )
        .await;
    for (proxy, rx) in [(&open, &rx_open), (&guarded, &rx_auth)] {
        assert!(proxy.tunnels() >= 1, "the proxy opened the tunnels");
        let target = format!("127.0.0.1:{}", rx.port);
        assert!(
            proxy.targets().iter().all(|t| *t == target),
            "{:?}",
            proxy.targets()
        );
        // TLS ran end to end through the tunnel: ALPN with the receiver chose HTTP/2.
        assert!(rx
            .received()
            .iter()
            .all(|r| r.version == http::Version::HTTP_2));
    }
    assert_eq!(guarded.refused(), 0);
    let logs = natshook.logs();
    assert!(
        logs.contains(&format!("proxy={}/", guarded.url())),
        "the start-up log names the proxy:\n{logs}"
    );
    assert_no_password(&natshook, PROXY_PASSWORD);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_proxy_credentials_fail_attempts_that_are_retried_without_loss() {
    let pki = pki();
    let rx = Receiver::start_tls(pki.server.clone()).await;
    let proxy = ConnectProxy::with_credentials("natshook", "the-right-one").await;
    let nats = NatsServer::start();
    let mut config = TestConfig::new(nats.url());
    config.top = format!("[admin]\nenabled = true\ntoken = {{ value = \"{ADMIN_TOKEN}\" }}\n");
    let wrong = format!(
        "proxy = {{ url = \"{}\", username = \"natshook\", password = {{ value = \"{PROXY_PASSWORD}\" }} }}\nretry_schedule = [\"200ms\"]\ndisable_after_failures = 0",
        proxy.url()
    );
    config.endpoints.push(tls_endpoint(
        &pki,
        "wrong",
        &rx.https_url("/"),
        &format!("{wrong}\nmax_attempts = 1000"),
    ));
    // The same mistake with two attempts: dead letters and delivery log entries.
    config.endpoints.push(tls_endpoint(
        &pki,
        "gives-up",
        &rx.https_url("/"),
        &format!("{wrong}\nmax_attempts = 2"),
    ));
    let natshook = Natshook::start(&config.render()).await;
    let js = jetstream::new(nats.client().await);
    publish_all(&js, leads(5, "refused")).await;
    rx.wait_for(
        Duration::from_secs(30),
        "retries refused by the proxy",
        |_| proxy.refused() >= 25,
    )
    .await;
    assert_eq!(rx.count(), 0, "nothing got past the proxy");
    assert_eq!(proxy.tunnels(), 0);
    let error = format!(
        "connect error: through proxy {}: tunnel error: proxy authorization required",
        proxy.url()
    );
    let logs = natshook.logs();
    assert!(logs.contains(&error), "{logs}");
    let dead = natshook
        .wait_dead_letters("gives-up", 5, Duration::from_secs(20))
        .await;
    assert!(
        dead.iter().all(|d| d["last_error"] == error.as_str()),
        "{dead:?}"
    );
    let (status, log) = natshook
        .api(
            "GET",
            "/api/endpoints/gives-up/deliveries",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{log}");
    let log = log.to_string();
    assert!(log.contains("proxy authorization required"), "{log}");
    // The operator fixes the proxy's side: every message arrives, none was lost.
    proxy.set_credentials("natshook", PROXY_PASSWORD);
    rx.wait_for(Duration::from_secs(30), "5 delivered", |r| {
        r.delivered_ids().len() == 5
    })
    .await;
    assert!(natshook.dead_letters("wrong").is_empty());
    let metrics = natshook.metrics().await;
    let failed = natshook
        .metric("natshook_delivery_attempts_total{endpoint=\"wrong\",status=\"connect_error\"}")
        .await
        .unwrap_or(0.0);
    assert!(failed >= 10.0, "{failed} failed attempts counted");
    let everything = format!(
        "{metrics}\n{log}\n{}",
        serde_json::to_string(&dead).unwrap()
    );
    assert!(!everything.contains(PROXY_PASSWORD), "the password leaked");
    assert_no_password(&natshook, PROXY_PASSWORD);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environments_proxy_with_userinfo_unless_no_proxy_or_none_say_otherwise() {
    let pki = pki();
    let via = Receiver::start_tls(pki.server.clone()).await;
    let bypassed = Receiver::start_tls(pki.server.clone()).await;
    let opted_out = Receiver::start_tls(pki.server.clone()).await;
    let proxy = ConnectProxy::with_credentials("env-user", PROXY_PASSWORD).await;
    let nats = NatsServer::start();
    let mut config = TestConfig::new(nats.url());
    config
        .endpoints
        .push(tls_endpoint(&pki, "via", &via.https_url("/"), ""));
    // NO_PROXY names localhost: this one connects directly.
    let bypassed_url = format!("https://localhost:{}/", bypassed.port);
    config
        .endpoints
        .push(tls_endpoint(&pki, "bypassed", &bypassed_url, ""));
    config.endpoints.push(tls_endpoint(
        &pki,
        "optout",
        &opted_out.https_url("/"),
        "proxy = \"none\"",
    ));
    let https_proxy = format!("http://env-user:{PROXY_PASSWORD}@127.0.0.1:{}", proxy.port);
    let natshook = Natshook::start_with(
        &config.render(),
        &[
            ("HTTPS_PROXY", https_proxy.as_str()),
            ("no_proxy", "example.com, localhost"),
        ],
        &[],
    )
    .await;
    let js = jetstream::new(nats.client().await);
    deliver_leads(&js, &via, 10, "env").await;
    for rx in [&bypassed, &opted_out] {
        rx.wait_for(Duration::from_secs(20), "10 delivered directly", |r| {
            r.delivered_ids().len() >= 10
        })
        .await;
    }
    let tunnels = proxy.tunnels();
    assert!(tunnels >= 1);
    let target = format!("127.0.0.1:{}", via.port);
    assert!(
        proxy.targets().iter().all(|t| *t == target),
        "only the endpoint without NO_PROXY or proxy = \"none\" used the proxy: {:?}",
        proxy.targets()
    );
    // More traffic to the direct endpoints opens no tunnel.
    publish_all(&js, leads(10, "env-more")).await;
    bypassed
        .wait_for(Duration::from_secs(20), "20 delivered", |r| {
            r.delivered_ids().len() >= 20
        })
        .await;
    opted_out
        .wait_for(Duration::from_secs(20), "20 delivered", |r| {
            r.delivered_ids().len() >= 20
        })
        .await;
    via.wait_for(Duration::from_secs(20), "20 delivered", |r| {
        r.delivered_ids().len() >= 20
    })
    .await;
    assert!(proxy.targets().iter().all(|t| *t == target));
    assert_eq!(
        proxy.refused(),
        0,
        "the userinfo became Proxy-Authorization"
    );
    let logs = natshook.logs();
    assert!(
        logs.contains(&format!(
            "proxy=http://127.0.0.1:{}/ (from the environment)",
            proxy.port
        )),
        "{logs}"
    );
    assert_no_password(&natshook, PROXY_PASSWORD);
}

/// A plain-http receiver goes through a CONNECT tunnel too, and its host name is the
/// proxy's to resolve: natshook never looks up `receiver.example`, and the proxy's own
/// loopback address needs no allow_private.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_http_receiver_named_by_a_host_only_the_proxy_resolves() {
    let rx = Receiver::start().await;
    let proxy = ConnectProxy::start().await;
    proxy.alias("receiver.example", "127.0.0.1");
    let nats = NatsServer::start();
    let mut config = TestConfig::new(nats.url());
    config.endpoints.push(format!(
        "[[endpoints]]\nname = \"named\"\nurl = \"http://receiver.example:{}/hook\"\nevents = [\"*\"]\nsecret = \"s\"\nallow_http = true\nproxy = \"{}\"\n",
        rx.port,
        proxy.url()
    ));
    let _natshook = Natshook::start(&config.render()).await;
    let js = jetstream::new(nats.client().await);
    deliver_leads(&js, &rx, 10, "named").await;
    assert_eq!(
        rx.received()[0].header("host"),
        format!("receiver.example:{}", rx.port)
    );
    let target = format!("receiver.example:{}", rx.port);
    assert!(proxy.tunnels() >= 1);
    assert!(
        proxy.targets().iter().all(|t| *t == target),
        "{:?}",
        proxy.targets()
    );
}

/// A proxy reached over TLS (`https://` proxy URL), trusted through the system roots
/// (`SSL_CERT_FILE`), with the receiver's own TLS inside the tunnel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_proxy_carries_the_receivers_tls_inside_its_own() {
    let pki = pki();
    let rx = Receiver::start_tls(pki.server.clone()).await;
    let proxy = ConnectProxy::start_tls(pki.server_any_client.clone()).await;
    let nats = NatsServer::start();
    let mut config = TestConfig::new(nats.url());
    config.endpoints.push(tls_endpoint(
        &pki,
        "tlsproxy",
        &rx.https_url("/"),
        &format!("proxy = \"https://localhost:{}\"", proxy.port),
    ));
    let _natshook = Natshook::start_with(
        &config.render(),
        &[("SSL_CERT_FILE", pki.path("ca.pem").as_str())],
        &[],
    )
    .await;
    let js = jetstream::new(nats.client().await);
    deliver_leads(&js, &rx, 10, "tlsproxy").await;
    assert!(proxy.tunnels() >= 1);
}

#[test]
fn check_names_the_proxy_key_of_each_problem() {
    let base = "url = \"https://hooks.example.com/\"\nevents = [\"*\"]\nsecret = \"s\"\n";
    let cases = [
        (
            "proxy = \"socks5://127.0.0.1:1080\"",
            "endpoints[0].proxy: scheme socks5 is not supported",
        ),
        (
            "proxy = \"http://proxy.internal\"",
            "endpoints[0].proxy: 'http://proxy.internal' must name the port",
        ),
        (
            "proxy = { url = \"http://127.0.0.1:3128\", username = \"u\", password = { env = \"NATSHOOK_TEST_NO_SUCH_VAR\" } }",
            "endpoints[0].proxy.password: environment variable NATSHOOK_TEST_NO_SUCH_VAR is not set",
        ),
        (
            "proxy = { uri = \"http://127.0.0.1:3128\" }",
            "endpoints[0].proxy.uri: unknown key (expected one of: url, username, password)",
        ),
        (
            "proxy = 3128",
            "endpoints[0].proxy: invalid type: found signed int `3128`, expected a proxy URL",
        ),
    ];
    for (line, expected) in cases {
        let (code, stderr) = check_config(&one_endpoint(&format!("{base}{line}\n")));
        assert_eq!(code, 2, "{line}: {stderr}");
        assert!(stderr.contains(expected), "{line}: {stderr}");
    }
    // In [defaults], named there.
    let config = one_endpoint(base).replace(
        "[[endpoints]]",
        "[defaults]\nproxy = \"http://user:hunter2@127.0.0.1:3128\"\n[[endpoints]]",
    );
    let (code, stderr) = check_config(&config);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("defaults.proxy: credentials do not belong in the URL"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
    // A good one passes.
    let (code, stderr) = check_config(&one_endpoint(&format!(
        "{base}proxy = {{ url = \"https://proxy.example.com:3128\", username = \"u\", password = \"p\" }}\n"
    )));
    assert_eq!(code, 0, "{stderr}");
}
