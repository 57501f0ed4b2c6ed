//! The shared client: its pool and liveness against loopback servers, and the renewal
//! of its TLS files.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use hyper_util::rt::{TokioExecutor, TokioIo};

use super::{build_with, Liveness, Reads, Shape};
use crate::config::Config;

/// A connection left idle in the pool is closed after the idle timeout, with no
/// further request to its host: the receiver sees its end.
#[tokio::test]
async fn an_idle_pooled_connection_is_closed_without_another_request() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let text = format!(
        "[nats]\nstream = \"E\"\n[[events]]\nsubject = \"a\"\nevent = \"a\"\n\
         [[endpoints]]\nname = \"x\"\nurl = \"http://{addr}/\"\nevents = [\"*\"]\n\
         secret = \"s\"\nallow_http = true\nallow_private = true\n"
    );
    let endpoint = Config::from_str(&text, "toml").unwrap().endpoints.remove(0);
    let liveness = Liveness {
        idle: Duration::from_millis(200),
        ..Liveness::DEFAULT
    };
    let client = client_with(&endpoint, liveness);
    let served = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        // The whole request (its body `{}` last), however many reads it takes.
        let mut got = Vec::new();
        while !got.ends_with(b"{}") {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the request arrived");
            got.extend_from_slice(&buf[..n]);
        }
        tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        // The client's end: 0 bytes read once it closes the connection.
        tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await
    });
    let req = http::Request::post(format!("http://{addr}/"))
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    drop(resp);
    let closed = served.await.unwrap();
    assert!(matches!(closed, Ok(Ok(0))), "still open: {closed:?}");
    // The client itself lived on all along: the pool, not a drop, closed it.
    drop(client);
}

/// An HTTP/2 connection that goes silent (the network holds every byte, nothing
/// is closed) is found dead by an unanswered PING: the request waiting on it
/// fails as a timeout, and the next one to the host opens a new connection
/// instead of waiting on the dead one.
#[tokio::test]
async fn a_silent_http2_connection_is_dropped_after_an_unanswered_ping() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], der)
    .unwrap();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

    // The receiver: HTTP/2 over TLS, 200 to everything.
    let receiver = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver_addr = receiver.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = receiver.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::new())))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });

    // Between them, a network path: the first connection's path goes silent on
    // demand, in both directions, without closing.
    let path = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = path.local_addr().unwrap();
    let silent = Arc::new(AtomicBool::new(false));
    let connections = Arc::new(AtomicUsize::new(0));
    {
        let (silent, connections) = (silent.clone(), connections.clone());
        tokio::spawn(async move {
            loop {
                let (client_side, _) = path.accept().await.unwrap();
                let first = connections.fetch_add(1, Ordering::SeqCst) == 0;
                let server_side = tokio::net::TcpStream::connect(receiver_addr).await.unwrap();
                let (cr, cw) = client_side.into_split();
                let (sr, sw) = server_side.into_split();
                for (mut from, mut to) in [
                    (
                        Box::new(cr) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
                        Box::new(sw) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
                    ),
                    (Box::new(sr), Box::new(cw)),
                ] {
                    let silent = silent.clone();
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match from.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if first && silent.load(Ordering::SeqCst) {
                                // Held for good, as a dead peer's network would.
                                std::future::pending::<()>().await;
                            }
                            if to.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        });
    }

    let text = format!(
        "[nats]\nstream = \"E\"\n[[events]]\nsubject = \"a\"\nevent = \"a\"\n\
         [[endpoints]]\nname = \"x\"\nurl = \"https://{addr}/\"\nevents = [\"*\"]\n\
         secret = \"s\"\nallow_private = true\nca_file = {:?}\n",
        ca_path.display().to_string()
    );
    let endpoint = Config::from_str(&text, "toml").unwrap().endpoints.remove(0);
    let liveness = Liveness {
        ping_after: Duration::from_millis(200),
        ping_timeout: Duration::from_millis(200),
        ..Liveness::DEFAULT
    };
    let client = client_with(&endpoint, liveness);
    let post = || {
        http::Request::post(format!("https://{addr}/"))
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap()
    };
    let resp = client.request(post()).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    drop(resp);

    silent.store(true, Ordering::SeqCst);
    // A request on the silent connection fails once the PING goes unanswered.
    let stuck = tokio::time::timeout(Duration::from_secs(5), client.request(post()))
        .await
        .expect("the request waited on the silent connection past the PING's timeout");
    let e = stuck.expect_err("an answer came through a silent connection");
    assert!(super::timed_out(&e), "{e:?}");
    let resp = tokio::time::timeout(Duration::from_secs(5), client.request(post()))
        .await
        .expect("the request waited on the silent connection")
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

/// Endpoints that trust one `[defaults] ca_file`, or go through one proxy, share a
/// client as endpoints without either do: at 10,000 endpoints a client each held
/// 84 MiB more for a CA file, 23 MiB more for a proxy. A CA file that holds another
/// certificate (rotated) is loaded by the shared client, for every endpoint that
/// holds it, and one written again with the same bytes keeps the client; one that
/// cannot be loaded leaves the earlier client, and is reported once.
#[test]
fn endpoints_with_the_same_ca_file_or_proxy_share_a_client_that_follows_the_file() {
    use std::sync::Arc;

    use super::{shared, Renewal, ShapeClient};
    use crate::config::test_endpoint;

    let rewrite = |path: &std::path::Path, text: &str| std::fs::write(path, text).unwrap();
    // As the watcher does at each check.
    let renew = |client: &ShapeClient| client.renew(&mut Reads::default());
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, self_signed()).unwrap();
    let trusting = || test_endpoint(&format!("secret = \"s\"\nca_file = \"{}\"", ca.display()));
    // Loaded while the file holds a certificate, as a config is checked.
    let later = trusting();
    let first = shared(&trusting(), 64).unwrap();
    assert!(Arc::ptr_eq(&first, &shared(&trusting(), 64).unwrap()));
    let plain = shared(&test_endpoint("secret = \"s\""), 64).unwrap();
    assert!(!Arc::ptr_eq(&first, &plain));
    let loaded = first.current.load_full();
    assert!(matches!(renew(&first), Renewal::Unchanged));
    // The same bytes written again: the client and its pool stay.
    rewrite(&ca, &std::fs::read_to_string(&ca).unwrap());
    assert!(matches!(renew(&first), Renewal::Unchanged));
    assert!(Arc::ptr_eq(&loaded, &first.current.load_full()));

    // Another certificate of the same length, written at once (within one tick of
    // the file system's clock): the client loads it, for every endpoint that holds
    // it and those that join it.
    let len = std::fs::metadata(&ca).unwrap().len() as usize;
    let same_length = (0..1_000)
        .map(|_| self_signed())
        .find(|other| other.len() == len)
        .expect("a certificate of the same length");
    rewrite(&ca, &same_length);
    assert!(matches!(renew(&first), Renewal::Renewed));
    assert!(Arc::ptr_eq(&first, &shared(&trusting(), 64).unwrap()));
    let reloaded = first.current.load_full();
    assert!(!Arc::ptr_eq(&loaded, &reloaded));

    // Not a certificate: the client stays, the build is tried at every check, the
    // error is reported once.
    rewrite(&ca, "not a certificate\n");
    assert!(matches!(
        renew(&first),
        Renewal::Failed {
            reported: false,
            ..
        }
    ));
    assert!(matches!(
        renew(&first),
        Renewal::Failed { reported: true, .. }
    ));
    // Another content with the same error: reported too.
    rewrite(&ca, "still not a certificate\n");
    assert!(matches!(
        renew(&first),
        Renewal::Failed {
            reported: false,
            ..
        }
    ));
    assert!(Arc::ptr_eq(&reloaded, &first.current.load_full()));
    let joining = shared(&later, 64).unwrap();
    assert!(
        Arc::ptr_eq(&joining, &first),
        "joins the client of its shape"
    );
    rewrite(&ca, &self_signed());
    assert!(matches!(renew(&first), Renewal::Renewed));
    assert!(!Arc::ptr_eq(&reloaded, &first.current.load_full()));

    let through = |proxy: &str| {
        let e = test_endpoint(&format!("secret = \"s\"\nproxy = \"{proxy}\""));
        shared(&e, 64).unwrap()
    };
    let proxied = through("http://127.0.0.1:3128");
    assert!(Arc::ptr_eq(&proxied, &through("http://127.0.0.1:3128")));
    assert!(!Arc::ptr_eq(&proxied, &through("http://127.0.0.1:3129")));
    assert!(!Arc::ptr_eq(&proxied, &plain));
}

/// A reload builds the clients of new shapes on the blocking pool, ahead of the
/// deliverers: an endpoint started while they are held reads no file (here, its CA
/// file is gone by then), one whose file cannot be read gets the read's error, and
/// one started after they are dropped reads the files again.
#[tokio::test]
async fn clients_made_ready_are_taken_without_reading_the_files_again() {
    use super::{ready_clients, shared};
    use crate::config::test_endpoint;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let pem = self_signed();
    let other = dir.path().join("other.pem");
    std::fs::write(&ca, &pem).unwrap();
    std::fs::write(&other, &pem).unwrap();
    let with_ca = |file: &std::path::Path, timeout: &str| {
        test_endpoint(&format!(
            "secret = \"s\"\ntimeout = \"{timeout}\"\nca_file = \"{}\"",
            file.display()
        ))
    };
    let endpoint = with_ca(&ca, "7s");
    // Valid when its config was checked, gone before its reload.
    let broken = with_ca(&other, "8s");
    std::fs::remove_file(&other).unwrap();

    let ready = ready_clients([&endpoint, &endpoint, &broken], 64).await;
    std::fs::remove_file(&ca).unwrap();
    let first = ready.client(&endpoint).expect("the client made ready");
    assert!(Arc::ptr_eq(&first, &shared(&endpoint, 64).unwrap()));
    let error = ready.client(&broken).err().expect("its read failed");
    assert!(error.to_string().contains("other.pem"), "{error}");

    drop((ready, first));
    let error = shared(&endpoint, 64).err().expect("read again");
    assert!(error.to_string().contains("ca.pem"), "{error}");
}

/// A TLS file whose read does not return (here a FIFO nobody writes; in production a
/// hung mount) fails its endpoints' start after the wait, with an error that says so,
/// instead of holding the reload and the shutdown behind it; the other shapes made
/// ready with it start.
#[tokio::test]
async fn a_tls_file_read_that_hangs_fails_the_start_after_the_wait() {
    use super::ready_within;
    use crate::config::test_endpoint;

    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let pem = self_signed();
    std::fs::write(&ca, pem).unwrap();
    let endpoint = test_endpoint(&format!(
        "secret = \"s\"\ntimeout = \"9s\"\nca_file = \"{}\"",
        ca.display()
    ));
    std::fs::remove_file(&ca).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&ca)
        .status()
        .unwrap();
    assert!(made.success());
    // Opens the FIFO's other end when the test ends, pass or fail: the blocked read
    // returns and the runtime can shut down.
    struct Release<'a>(&'a std::path::Path);
    impl Drop for Release<'_> {
        fn drop(&mut self) {
            drop(std::fs::OpenOptions::new().write(true).open(self.0));
        }
    }
    let _release = Release(&ca);

    let started = std::time::Instant::now();
    // A shape of its own, with no file: built while the other's read hangs.
    let plain = test_endpoint("secret = \"s\"\ntimeout = \"11s\"");
    let ready = ready_within([&endpoint, &plain], 64, Duration::from_millis(300)).await;
    assert!(ready.client(&plain).is_ok());
    assert!(started.elapsed() < Duration::from_secs(5));
    let error = ready.client(&endpoint).err().expect("the read hangs");
    assert!(
        error
            .to_string()
            .contains("reading the TLS files took over"),
        "{error}"
    );
}

/// A self-signed certificate, PEM, with a new key each time.
fn self_signed() -> String {
    rcgen::generate_simple_self_signed(vec!["ca.test".to_string()])
        .unwrap()
        .cert
        .pem()
}

/// `endpoint`'s client with `liveness` in place of the default one.
fn client_with(endpoint: &crate::config::Endpoint, liveness: Liveness) -> super::HttpClient {
    let shape = Shape::of(endpoint, 4);
    build_with(
        &shape,
        &shape.read(&mut Reads::default()).unwrap(),
        liveness,
    )
    .unwrap()
}
