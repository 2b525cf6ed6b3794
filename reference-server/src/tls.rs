//! TLS on both ports with rustls: a server certificate and key, and
//! optionally client certificates verified against a CA (mutual TLS).
//! Start-up errors name the file and the problem, with MindSpore Serving's
//! texts (spec §8) followed by the cause.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Certificate files for both ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain of the server.
    pub certificate: PathBuf,
    /// PEM private key of the server.
    pub private_key: PathBuf,
    /// PEM CA bundle; when given, clients must present a certificate it signed.
    pub client_ca: Option<PathBuf>,
}

/// A certificate problem at start-up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The certificate chain cannot be read.
    #[error("Serving Error: load certificate_chain from {file} failed: {reason}")]
    Certificate {
        /// The file.
        file: PathBuf,
        /// Why.
        reason: String,
    },
    /// The private key cannot be read.
    #[error("Serving Error: load private_key from {file} failed: {reason}")]
    PrivateKey {
        /// The file.
        file: PathBuf,
        /// Why.
        reason: String,
    },
    /// The key does not belong to the certificate.
    #[error("Serving Error: private_key is not consistent with certificate {file}: {reason}")]
    Mismatch {
        /// The certificate file.
        file: PathBuf,
        /// Why.
        reason: String,
    },
    /// The client CA cannot be read.
    #[error("Serving Error: load root certificate from {file} failed: {reason}")]
    RootCertificate {
        /// The file.
        file: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Builds the rustls configuration; `alpn` lists the protocols offered.
pub fn server_config(files: &TlsFiles, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.certificate)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Certificate {
            file: files.certificate.clone(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Certificate {
            file: files.certificate.clone(),
            reason: "no PEM certificate in the file".into(),
        });
    }
    let key =
        PrivateKeyDer::from_pem_file(&files.private_key).map_err(|e| TlsError::PrivateKey {
            file: files.private_key.clone(),
            reason: e.to_string(),
        })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Certificate {
            file: files.certificate.clone(),
            reason: e.to_string(),
        })?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let root_err = |reason: String| TlsError::RootCertificate {
                file: ca.clone(),
                reason,
            };
            let mut roots = rustls::RootCertStore::empty();
            let cas = CertificateDer::pem_file_iter(ca)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| root_err(e.to_string()))?;
            if cas.is_empty() {
                return Err(root_err("no PEM certificate in the file".into()));
            }
            for cert in cas {
                roots.add(cert).map_err(|e| root_err(e.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| root_err(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Mismatch {
            file: files.certificate.clone(),
            reason: e.to_string(),
        })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}
