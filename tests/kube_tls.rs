//! The `kube` capability over TLS. No API server runs here, so the peer is
//! `kubeapi::TlsKubeApi`, a rustls server speaking the node-list part of
//! the Kubernetes API, with certificates from a throwaway CA made by
//! openssl: the right CA bundle connects, a wrong one is refused clearly
//! (and not retried), a server that requires a client certificate gets
//! one, and the in-cluster service account (token file, `ca.crt`,
//! `KUBERNETES_SERVICE_HOST`/`PORT`) works the same way. The `http`
//! grant's own CA bundle is checked against the same server.

use eventpulse_tests::kubeapi::TlsKubeApi;
use eventpulse_tests::pki::TestCa;
use eventpulse_tests::{Host, action_request, alert_event};

/// Run the probe's `kube-nodes` op under `grant` (TOML lines of
/// `[grants.kube]`, plus any `[secrets]`): its summary or its error.
async fn nodes(host: &Host, manifest: &str) -> Result<String, String> {
    host.install_now("action-docker-probe", "action-docker-probe", manifest)
        .await;
    let event = alert_event("HighCPU", eventpulse::model::AlertStatus::Firing, &[]);
    let request = action_request("action-docker-probe", "app", r#"{"op": "kube-nodes"}"#);
    let got = host
        .registry
        .run_action("action-docker-probe", &event, &request)
        .await
        .map(|r| r.summary)
        .map_err(|e| e.to_string());
    host.registry.reset_breaker("action-docker-probe").unwrap();
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_over_tls_trusts_only_the_granted_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "kube");
    let other = TestCa::new(dir.path(), "other");
    let server = TlsKubeApi::start(&ca.issue("apiserver", false), None, Some("s3cret")).await;
    let host = Host::start().await;
    unsafe { std::env::set_var("EP_TEST_KUBE_TOKEN", "s3cret") };
    let grant = |ca: &std::path::Path| {
        format!(
            "[grants.kube]\nendpoint = \"{}\"\ntoken_secret = \"token\"\nca_file = \"{}\"\n\n[secrets]\ntoken = {{ env = \"EP_TEST_KUBE_TOKEN\" }}\n",
            server.url,
            ca.display()
        )
    };
    assert_eq!(
        nodes(&host, &grant(&ca.cert)).await.unwrap(),
        "nodes: tls-node-0"
    );

    let err = nodes(&host, &grant(&other.cert)).await.unwrap_err();
    assert!(err.contains("TLS certificate was refused"), "{err}");
    assert!(!err.contains("s3cret"), "no secret in errors: {err}");

    // No CA bundle: the system roots, which do not know the test CA.
    let system = format!(
        "[grants.kube]\nendpoint = \"{}\"\ntoken_secret = \"token\"\n\n[secrets]\ntoken = {{ env = \"EP_TEST_KUBE_TOKEN\" }}\n",
        server.url
    );
    let err = nodes(&host, &system).await.unwrap_err();
    assert!(err.contains("TLS certificate was refused"), "{err}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_presents_a_client_certificate_when_granted_one() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "kube");
    let clients = TestCa::new(dir.path(), "clients");
    let server = TlsKubeApi::start(&ca.issue("apiserver", false), Some(&clients.cert), None).await;
    let me = clients.issue("eventpulse", true);
    let host = Host::start().await;
    let base = format!(
        "[grants.kube]\nendpoint = \"{}\"\nca_file = \"{}\"\n",
        server.url,
        ca.cert.display()
    );
    let err = nodes(&host, &base).await.unwrap_err();
    assert!(
        err.contains("kube"),
        "no client certificate, no answer: {err}"
    );
    let with_cert = format!(
        "{base}client_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
        me.cert.display(),
        me.key.display()
    );
    assert_eq!(nodes(&host, &with_cert).await.unwrap(), "nodes: tls-node-0");
    let half = format!("{base}client_cert_file = \"{}\"\n", me.cert.display());
    let err = nodes(&host, &half).await.unwrap_err();
    assert!(err.contains("go together"), "{err}");
    host.stop().await;
}

/// In a pod: the service account's token and CA from its directory, the
/// server from the environment. (The variables are set for this test
/// binary; no other test reads them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_in_cluster_uses_the_service_account() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "cluster");
    let server = TlsKubeApi::start(&ca.issue("apiserver", false), None, Some("sa-token")).await;
    let sa = dir.path().join("serviceaccount");
    std::fs::create_dir_all(&sa).unwrap();
    std::fs::write(sa.join("token"), "sa-token\n").unwrap();
    std::fs::copy(&ca.cert, sa.join("ca.crt")).unwrap();
    let port = server.url.rsplit(':').next().unwrap().to_owned();
    unsafe {
        std::env::set_var("KUBERNETES_SERVICE_HOST", "127.0.0.1");
        std::env::set_var("KUBERNETES_SERVICE_PORT", &port);
    }
    let host = Host::start().await;
    let grant = format!(
        "[grants.kube]\nin_cluster = true\nservice_account_dir = \"{}\"\n",
        sa.display()
    );
    assert_eq!(nodes(&host, &grant).await.unwrap(), "nodes: tls-node-0");
    // A rotated token is read on the next call.
    std::fs::write(sa.join("token"), "rotated\n").unwrap();
    let err = nodes(&host, &grant).await.unwrap_err();
    assert!(
        err.contains("401"),
        "the stand-in only knows the old token: {err}"
    );
    host.stop().await;
}

/// An `http` grant with `ca_file` reaches an https endpoint signed by that
/// CA (an internal one the system roots do not know); another CA's bundle,
/// or none, is refused (a certificate error; a TLS error from wasmtime's
/// own client without a bundle).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_grants_trust_their_own_ca_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "internal");
    let other = TestCa::new(dir.path(), "other");
    let server = TlsKubeApi::start(&ca.issue("hooks", false), None, None).await;
    let host = Host::start().await;
    let manifest = |ca: Option<&std::path::Path>| {
        let ca = ca.map_or(String::new(), |p| {
            format!(", ca_file = \"{}\"", p.display())
        });
        format!(
            "[grants]\nhttp = {{ allow = [\"{url}\"]{ca} }}\n\n[config]\nurl = \"{url}/hook\"\n",
            url = server.url
        )
    };
    let event = alert_event("HighCPU", eventpulse::model::AlertStatus::Firing, &[]);
    let notification = eventpulse::runtime::types::NotificationRequest {
        channel: "probe".into(),
        severity: eventpulse::runtime::types::Severity::Warning,
        title: "t".into(),
        body: "b".into(),
        dedup_key: None,
        fields: vec![],
    };
    let mut answers = Vec::new();
    for ca in [Some(ca.cert.as_path()), Some(other.cert.as_path()), None] {
        host.install_now("probe", "notifier-http-probe", &manifest(ca))
            .await;
        answers.push(
            host.registry
                .deliver("probe", &event, &notification)
                .await
                .map(|d| d.detail)
                .map_err(|e| e.to_string()),
        );
        host.registry.reset_breaker("probe").unwrap();
    }
    assert_eq!(answers[0].as_deref(), Ok("HTTP 200"), "{answers:?}");
    let other_ca = answers[1].as_ref().unwrap_err().to_lowercase();
    assert!(other_ca.contains("certificate"), "{other_ca}");
    // No bundle: wasmtime's own client (webpki roots) refuses the handshake.
    let no_ca = answers[2].as_ref().unwrap_err().to_lowercase();
    assert!(no_ca.contains("tls"), "{no_ca}");
    host.stop().await;
}
