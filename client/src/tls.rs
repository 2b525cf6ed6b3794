//! TLS options of the client: a custom CA, a client certificate and key
//! (mutual TLS), and a server-name override, for gRPC (`grpcs://`) and REST
//! (`https://`) alike. Without a custom CA, the platform's trusted roots
//! verify the server.

#[cfg(feature = "rest")]
use std::sync::Arc;

#[cfg(feature = "rest")]
use rustls::client::WebPkiServerVerifier;
#[cfg(feature = "rest")]
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
#[cfg(feature = "rest")]
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
#[cfg(feature = "rest")]
use rustls::{DigitallySignedStruct, SignatureScheme};
#[cfg(feature = "rest")]
use rustls_pki_types::pem::PemObject;

#[cfg(feature = "rest")]
use crate::Error;

/// PEM material for TLS connections.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    pub(crate) ca_pem: Option<Vec<u8>>,
    pub(crate) identity: Option<(Vec<u8>, Vec<u8>)>,
    pub(crate) server_name: Option<String>,
}

impl TlsOptions {
    /// The tonic configuration for `grpcs://` endpoints.
    #[cfg(feature = "grpc")]
    pub(crate) fn tonic(&self, host: &str) -> tonic::transport::ClientTlsConfig {
        let mut c = tonic::transport::ClientTlsConfig::new()
            .domain_name(self.server_name.clone().unwrap_or_else(|| host.to_owned()));
        match &self.ca_pem {
            Some(ca) => c = c.ca_certificate(tonic::transport::Certificate::from_pem(ca)),
            None => c = c.with_native_roots(),
        }
        if let Some((cert, key)) = &self.identity {
            c = c.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        c
    }

    /// The rustls configuration for `https://` endpoints.
    #[cfg(feature = "rest")]
    pub(crate) fn rustls(&self) -> Result<rustls::ClientConfig, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_pem {
            Some(ca) => {
                for cert in CertificateDer::pem_slice_iter(ca) {
                    let cert = cert.map_err(|e| Error::Config(format!("CA certificate: {e}")))?;
                    roots
                        .add(cert)
                        .map_err(|e| Error::Config(format!("CA certificate: {e}")))?;
                }
            }
            None => {
                let (added, _) =
                    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
                tracing::debug!(added, "platform root certificates loaded");
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(e.to_string()))?;
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| Error::Config(format!("TLS roots: {e}")))?;
        let builder = match &self.server_name {
            Some(name) => {
                let name = ServerName::try_from(name.clone())
                    .map_err(|e| Error::Config(format!("server name '{name}': {e}")))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(NameOverride {
                        inner: verifier,
                        name,
                    }))
            }
            None => builder.with_webpki_verifier(verifier),
        };
        let mut config = match &self.identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let certs = CertificateDer::pem_slice_iter(cert)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| Error::Config(format!("client certificate: {e}")))?;
                let key = PrivateKeyDer::from_pem_slice(key)
                    .map_err(|e| Error::Config(format!("client key: {e}")))?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| Error::Config(format!("client identity: {e}")))?
            }
        };
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// Verifies the server's certificate against a fixed name instead of the
/// URL's host (the server-name override).
#[cfg(feature = "rest")]
#[derive(Debug)]
struct NameOverride {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

#[cfg(feature = "rest")]
impl ServerCertVerifier for NameOverride {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
