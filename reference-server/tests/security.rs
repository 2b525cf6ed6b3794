//! TLS and mutual TLS on both ports, certificate errors at start-up, and
//! bearer-token authentication. Certificates are generated per test run.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use reference_server::server::{self, Config, Running};
use reference_server::tls::TlsFiles;
use serving_proto::mindspore;
use serving_proto::pb::mindspore::ms_service_client::MsServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }
}

fn ca(name: &str) -> (rcgen::Certificate, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert, rcgen::Issuer::new(params, key))
}

fn leaf(issuer: &rcgen::Issuer<'_, rcgen::KeyPair>, names: &[&str], dir: &Path, stem: &str) {
    let params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    std::fs::write(dir.join(format!("{stem}.crt")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{stem}.key")), key.serialize_pem()).unwrap();
}

/// A CA with a server certificate (localhost, 127.0.0.1) and a client
/// certificate, and a second, unrelated CA with its own client certificate.
fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let (ca_cert, issuer) = ca("serving test CA");
    std::fs::write(dir.path().join("ca.crt"), ca_cert.pem()).unwrap();
    leaf(&issuer, &["localhost", "127.0.0.1"], dir.path(), "server");
    leaf(&issuer, &["client"], dir.path(), "client");
    let (other_cert, other) = ca("another CA");
    std::fs::write(dir.path().join("other-ca.crt"), other_cert.pem()).unwrap();
    leaf(&other, &["client"], dir.path(), "stranger");
    Pki { dir }
}

async fn start(pki: &Pki, mutual: bool, token: Option<&str>) -> Running {
    common::start(Config {
        tls: Some(TlsFiles {
            certificate: pki.path("server.crt"),
            private_key: pki.path("server.key"),
            client_ca: mutual.then(|| pki.path("ca.crt")),
        }),
        auth_token: token.map(str::to_owned),
        ..common::config()
    })
    .await
}

async fn grpc_predict(
    server: &Running,
    pki: &Pki,
    ca: &str,
    identity: Option<&str>,
) -> Result<(), String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pki.read(ca)))
        .domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(
            pki.read(&format!("{id}.crt")),
            pki.read(&format!("{id}.key")),
        ));
    }
    let channel = Channel::from_shared(format!("https://127.0.0.1:{}", server.grpc_address.port()))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let instance = [
        (
            "x1".to_string(),
            serving_proto::Tensor::from_slice(&[2, 2], &[1f32; 4]).unwrap(),
        ),
        (
            "x2".to_string(),
            serving_proto::Tensor::from_slice(&[2, 2], &[1f32; 4]).unwrap(),
        ),
    ]
    .into();
    let req = mindspore::grpc::encode_request("add", "add_common", 0, &[instance]).unwrap();
    let reply = MsServiceClient::new(channel)
        .predict(req)
        .await
        .map_err(|e| format!("{e}"))?
        .into_inner();
    let y = mindspore::grpc::decode_reply(reply, 1)
        .unwrap()
        .instance(0)
        .unwrap()
        .map_err(|e| e.to_string())?;
    assert_eq!(y["y"].to_vec::<f32>().unwrap(), vec![2.0; 4]);
    Ok(())
}

/// An HTTPS POST over hyper and tokio-rustls; returns status and body.
async fn https_post(
    server: &Running,
    pki: &Pki,
    ca: &str,
    identity: Option<&str>,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String), String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::pem::PemObject::pem_file_iter(pki.path(ca)).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => {
            use rustls_pki_types::pem::PemObject;
            let certs =
                rustls_pki_types::CertificateDer::pem_file_iter(pki.path(&format!("{id}.crt")))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
            let key =
                rustls_pki_types::PrivateKeyDer::from_pem_file(pki.path(&format!("{id}.key")))
                    .unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
    };
    let tcp = tokio::net::TcpStream::connect(server.rest_address)
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| format!("http: {e}"))?;
    tokio::spawn(conn);
    let body = r#"{"instances":{"x1":[[1.0,1.0],[1.0,1.0]],"x2":[[1.0,1.0],[1.0,1.0]]}}"#;
    let mut req = http::Request::post(path).header("host", "localhost");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = send
        .send_request(req.body(Full::new(bytes::Bytes::from(body))).unwrap())
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

const OK_BODY: &str = r#"{"instances":[{"y":[[2.0,2.0],[2.0,2.0]]}]}"#;

#[tokio::test]
async fn one_way_tls_on_both_ports() {
    let pki = pki();
    let server = start(&pki, false, None).await;
    grpc_predict(&server, &pki, "ca.crt", None).await.unwrap();
    assert_eq!(
        https_post(&server, &pki, "ca.crt", None, "/model/add:add_common", &[])
            .await
            .unwrap(),
        (200, OK_BODY.into())
    );
    // A client that trusts another CA refuses the server.
    assert!(
        grpc_predict(&server, &pki, "other-ca.crt", None)
            .await
            .is_err()
    );
    assert!(
        https_post(
            &server,
            &pki,
            "other-ca.crt",
            None,
            "/model/add:add_common",
            &[]
        )
        .await
        .is_err()
    );
    // Plaintext to a TLS port fails.
    let plain = common::http()
        .post(format!(
            "http://{}/model/add:add_common",
            server.rest_address
        ))
        .body("{}")
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    server.shutdown().await;
}

#[tokio::test]
async fn mutual_tls_accepts_the_right_clients_and_refuses_the_wrong_ones() {
    let pki = pki();
    let server = start(&pki, true, None).await;
    grpc_predict(&server, &pki, "ca.crt", Some("client"))
        .await
        .unwrap();
    assert_eq!(
        https_post(
            &server,
            &pki,
            "ca.crt",
            Some("client"),
            "/model/add:add_common",
            &[]
        )
        .await
        .unwrap(),
        (200, OK_BODY.into())
    );
    for identity in [None, Some("stranger")] {
        assert!(
            grpc_predict(&server, &pki, "ca.crt", identity)
                .await
                .is_err(),
            "gRPC client {identity:?} must be refused"
        );
        assert!(
            https_post(
                &server,
                &pki,
                "ca.crt",
                identity,
                "/model/add:add_common",
                &[]
            )
            .await
            .is_err(),
            "REST client {identity:?} must be refused"
        );
    }
    // The server is still serving the right client afterwards.
    grpc_predict(&server, &pki, "ca.crt", Some("client"))
        .await
        .unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn certificate_errors_name_the_file() {
    let pki = pki();
    let attempt = |cert: PathBuf, key: PathBuf, ca: Option<PathBuf>| async move {
        server::start(Config {
            tls: Some(TlsFiles {
                certificate: cert,
                private_key: key,
                client_ca: ca,
            }),
            ..common::config()
        })
        .await
        .unwrap_err()
        .to_string()
    };
    let missing = pki.path("missing.crt");
    let e = attempt(missing.clone(), pki.path("server.key"), None).await;
    assert!(
        e.starts_with(&format!(
            "Serving Error: load certificate_chain from {} failed",
            missing.display()
        )),
        "{e}"
    );
    let e = attempt(pki.path("server.crt"), pki.path("server.crt"), None).await;
    assert!(
        e.starts_with(&format!(
            "Serving Error: load private_key from {} failed",
            pki.path("server.crt").display()
        )),
        "{e}"
    );
    let e = attempt(pki.path("server.crt"), pki.path("client.key"), None).await;
    assert!(
        e.starts_with(&format!(
            "Serving Error: private_key is not consistent with certificate {}",
            pki.path("server.crt").display()
        )),
        "{e}"
    );
    let e = attempt(
        pki.path("server.crt"),
        pki.path("server.key"),
        Some(pki.path("server.key")),
    )
    .await;
    assert!(
        e.starts_with(&format!(
            "Serving Error: load root certificate from {} failed",
            pki.path("server.key").display()
        )),
        "{e}"
    );
}

#[tokio::test]
async fn bearer_tokens_are_required_except_for_health() {
    let server = common::start(Config {
        auth_token: Some("s3cret".into()),
        ..common::config()
    })
    .await;
    let http = common::http();
    let body = r#"{"instances":{"x1":[[1.0,1.0],[1.0,1.0]],"x2":[[1.0,1.0],[1.0,1.0]]}}"#;
    let r = http
        .post(common::rest(&server, "/model/add:add_common"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(
        v["error_msg"]
            .as_str()
            .unwrap()
            .starts_with("missing or invalid credentials")
    );
    let r = http
        .get(common::rest(&server, "/v2/models/add"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.json::<serde_json::Value>().await.unwrap()["error"].is_string());
    let r = http
        .post(common::rest(&server, "/model/add:add_common"))
        .bearer_auth("s3cret")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.text().await.unwrap()),
        (200, OK_BODY.to_string())
    );
    assert_eq!(
        http.get(common::rest(&server, "/v2/health/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // gRPC: UNAUTHENTICATED without the token, served with it, health open.
    let mut c = common::oip(&server).await;
    let e = c
        .server_live(serving_proto::pb::inference::ServerLiveRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let mut req = tonic::Request::new(serving_proto::pb::inference::ServerLiveRequest {});
    req.metadata_mut()
        .insert("authorization", "Bearer s3cret".parse().unwrap());
    assert!(c.server_live(req).await.unwrap().into_inner().live);
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut health = HealthClient::new(common::channel(&server).await);
    assert!(
        health
            .check(HealthCheckRequest {
                service: String::new()
            })
            .await
            .is_ok()
    );
    server.shutdown().await;
}
