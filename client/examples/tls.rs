//! TLS and mutual TLS: a custom CA, a client certificate, a server-name
//! override.
//!
//! With no arguments the example is self-contained: it makes a throwaway CA,
//! server and client certificates, starts a reference server in this process
//! with mutual TLS on both ports, and calls it over `grpcs://` and
//! `https://`.
//!
//! ```sh
//! cargo run -p serving-client --example tls
//! ```
//!
//! Against your own server (started, for example, with
//! `cargo run -p reference-server -- --tls-cert server.crt --tls-key server.key --tls-client-ca ca.crt`):
//!
//! ```sh
//! cargo run -p serving-client --example tls -- grpcs://127.0.0.1:5500 ca.crt [client.crt client.key] [server-name]
//! ```

use std::path::{Path, PathBuf};

use serving_client::{Client, Error, NamedTensors, Protocol, Tensor};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [url, ca, rest @ ..] = args.as_slice() {
        let (identity, name) = match rest {
            [cert, key, name @ ..] => (
                Some((PathBuf::from(cert), PathBuf::from(key))),
                name.first().cloned(),
            ),
            [name] => (None, Some(name.clone())),
            _ => (None, None),
        };
        return Ok(call(url, Path::new(ca), identity, name).await?);
    }

    let dir = tempfile::tempdir()?;
    make_pki(dir.path())?;
    let server = reference_server::server::start(reference_server::server::Config {
        grpc_address: ([127, 0, 0, 1], 0).into(),
        rest_address: ([127, 0, 0, 1], 0).into(),
        tls: Some(reference_server::tls::TlsFiles {
            certificate: dir.path().join("server.crt"),
            private_key: dir.path().join("server.key"),
            client_ca: Some(dir.path().join("ca.crt")),
        }),
        ..Default::default()
    })
    .await?;
    let identity = Some((dir.path().join("client.crt"), dir.path().join("client.key")));
    for url in [
        format!("grpcs://127.0.0.1:{}", server.grpc_address.port()),
        format!("https://127.0.0.1:{}", server.rest_address.port()),
    ] {
        // The certificate names `models.internal`, not 127.0.0.1: override.
        call(
            &url,
            &dir.path().join("ca.crt"),
            identity.clone(),
            Some("models.internal".into()),
        )
        .await?;
    }
    server.shutdown().await;
    Ok(())
}

async fn call(
    url: &str,
    ca: &Path,
    identity: Option<(PathBuf, PathBuf)>,
    server_name: Option<String>,
) -> Result<(), Error> {
    let read =
        |p: &Path| std::fs::read(p).map_err(|e| Error::Config(format!("{}: {e}", p.display())));
    let mut builder = Client::builder()
        .endpoint(url)
        .protocol(Protocol::MindSpore)
        .ca_certificate_pem(read(ca)?);
    if let Some((cert, key)) = identity {
        builder = builder.identity_pem(read(&cert)?, read(&key)?);
    }
    if let Some(name) = server_name {
        builder = builder.server_name(name);
    }
    let client = builder.build()?;
    let x = Tensor::from_vec(&[2, 2], vec![1f32, 2.0, 3.0, 4.0]).expect("4 values");
    let instance: NamedTensors = [("x1".to_string(), x.clone()), ("x2".to_string(), x)].into();
    let results = client.predict("add", "add_common", &[instance]).await?;
    println!(
        "{url}: y = {:?}",
        results[0].as_ref().map(|o| o["y"].to_f64_vec())
    );
    Ok(())
}

/// A CA, a server certificate for `models.internal` and a client certificate.
fn make_pki(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate()?;
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    std::fs::write(dir.join("ca.crt"), ca.pem())?;
    for (stem, name) in [("server", "models.internal"), ("client", "client")] {
        let key = rcgen::KeyPair::generate()?;
        let cert =
            rcgen::CertificateParams::new(vec![name.to_string()])?.signed_by(&key, &issuer)?;
        std::fs::write(dir.join(format!("{stem}.crt")), cert.pem())?;
        std::fs::write(dir.join(format!("{stem}.key")), key.serialize_pem())?;
    }
    Ok(())
}
