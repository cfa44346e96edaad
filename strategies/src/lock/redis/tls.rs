//! TLS for `rediss://` servers (feature `redis-tls`: rustls with the *ring* provider, so no
//! OpenSSL is needed): the URL parameters that name a private CA and a client certificate.
//! The files are read and checked when the lock is built, so a missing or bad file is an
//! [`Error::Config`] then, not a failed connection at the first acquire. With the feature
//! `redis-tls-preload-roots` the system's trusted roots are read then too (when no CA file
//! replaces them), instead of by the Redis client for every new connection.

use turnstile_core::{Error, StrategyError};

/// The query parameter of a `rediss://…` URL naming a PEM file of the CA certificates that
/// sign the server's certificate (`rediss://host:6380/0?tls_ca=/etc/redis/ca.pem`). They
/// replace the system's trusted roots for that server. Without it the system's roots
/// are trusted (a server with a certificate from a public CA). Feature `redis-tls`.
pub const TLS_CA_PARAM: &str = "tls_ca";
/// The query parameter of a `rediss://…` URL naming a PEM file with the client's
/// certificate chain, for a server that requires client certificates (mutual TLS;
/// `tls-auth-clients yes`, redis-server's default). Needs [`TLS_KEY_PARAM`] too.
pub const TLS_CERT_PARAM: &str = "tls_cert";
/// The query parameter of a `rediss://…` URL naming a PEM file with the private key of
/// the [`TLS_CERT_PARAM`] certificate.
pub const TLS_KEY_PARAM: &str = "tls_key";

/// The TLS files a Redis URL's query names, as written there (percent-encoded).
#[derive(Debug, Default)]
pub(super) struct TlsFiles {
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

impl TlsFiles {
    /// Takes the `tls_*` parameters out of `url`'s query, answering the URL without them
    /// (what the Redis client parses) and the files they name.
    ///
    /// # Errors
    /// [`Error::Config`] for a parameter given twice, with no value, or an unknown `tls_…`
    /// parameter (a typo would otherwise silently trust the system's roots). Names are
    /// read percent-decoded, as the redis crate reads its own. An unknown name is quoted
    /// only where the redacted URL shows it (it may be a piece of what may be the
    /// password).
    pub(super) fn take(url: &str) -> Result<(String, Self), StrategyError> {
        let (rest, taken) = super::take_params(url, |name| name.starts_with("tls_"));
        let shown = || crate::spec::redact_url(url);
        let mut files = TlsFiles::default();
        for param in taken {
            let (name, value) = (param.key.as_str(), param.value);
            let slot = match name {
                TLS_CA_PARAM => &mut files.ca,
                TLS_CERT_PARAM => &mut files.cert,
                TLS_KEY_PARAM => &mut files.key,
                _ => {
                    let quoted = param.quoted(url);
                    return Err(Error::Config(format!(
                        "unknown TLS parameter{quoted} in {:?}; expected {TLS_CA_PARAM}, {TLS_CERT_PARAM} or {TLS_KEY_PARAM}",
                        shown()
                    )));
                }
            };
            if value.is_empty() || slot.is_some() {
                return Err(Error::Config(format!(
                    "{name} in {:?} needs one file path, given once",
                    shown()
                )));
            }
            *slot = Some(value.to_owned());
        }
        Ok((rest, files))
    }

    /// Whether the URL named no TLS file.
    pub(super) fn is_empty(&self) -> bool {
        self.ca.is_none() && self.cert.is_none() && self.key.is_none()
    }

    /// A client for the `rediss://` server `info`, trusting [`TLS_CA_PARAM`]'s CAs (or the
    /// system's roots) and presenting [`TLS_CERT_PARAM`]'s certificate, if named. `url` is
    /// the URL the files were taken from, for error texts: they show it as
    /// [`redact_url`](crate::spec::redact_url) does, and quote a file's path only where
    /// that shows it.
    ///
    /// # Errors
    /// [`Error::Config`] for a file that can't be read, a CA file without a certificate or
    /// with a bad one, a certificate without its key (or the reverse), or a key that is
    /// unreadable or does not match the certificate.
    #[cfg(feature = "redis-tls")]
    pub(super) fn client(
        &self,
        info: redis::ConnectionInfo,
        url: &str,
    ) -> Result<redis::Client, StrategyError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};

        let shown = crate::spec::redact_url(url);
        let config = |what: String| Error::Config(format!("{what} (in {shown:?})"));
        let read = |param: &str, raw: &str| {
            let path = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
            // The path is the URL's text, which may be a piece of what may be the password
            // (`rediss://u:Xy?tls_ca=/a@h/0`): quoted only where the redacted URL shows it.
            let named = if shown.contains(raw) {
                format!("{param}={path:?}")
            } else {
                format!("{param} (a path the redacted URL does not show)")
            };
            std::fs::read(&*path).map_err(|e| config(format!("{named}: {e}")))
        };
        let certs = |param: &str, pem: &[u8]| {
            let certs = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| config(format!("{param}: not a PEM certificate file: {e}")))?;
            if certs.is_empty() {
                return Err(config(format!(
                    "{param}: the file holds no PEM certificate"
                )));
            }
            Ok(certs)
        };

        // The Redis client asks rustls for the process's default provider; make sure
        // there is one even when another crate enables a second provider (rustls then
        // can't pick). An application's own choice, installed earlier, stays.
        let provider = rustls::crypto::ring::default_provider();
        let _ = provider.clone().install_default();

        let root_cert = match &self.ca {
            Some(path) => {
                let pem = read(TLS_CA_PARAM, path)?;
                let mut roots = rustls::RootCertStore::empty();
                for cert in certs(TLS_CA_PARAM, &pem)? {
                    roots.add(cert).map_err(|e| {
                        config(format!("{TLS_CA_PARAM}: not a usable CA certificate: {e}"))
                    })?;
                }
                Some(pem)
            }
            None => system_roots().map_err(config)?,
        };
        let client_tls = match (&self.cert, &self.key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let client_cert = read(TLS_CERT_PARAM, cert)?;
                let client_key = read(TLS_KEY_PARAM, key)?;
                let chain = certs(TLS_CERT_PARAM, &client_cert)?;
                let der = PrivateKeyDer::from_pem_slice(&client_key).map_err(|e| {
                    config(format!(
                        "{TLS_KEY_PARAM}: no PEM private key in the file: {e}"
                    ))
                })?;
                // What rustls checks when it first connects: a supported key that matches.
                rustls::sign::CertifiedKey::from_der(chain, der, &provider).map_err(|e| {
                    config(format!(
                        "{TLS_KEY_PARAM} does not fit {TLS_CERT_PARAM}'s certificate: {e}"
                    ))
                })?;
                Some(redis::ClientTlsConfig {
                    client_cert,
                    client_key,
                })
            }
            _ => {
                return Err(config(format!(
                    "{TLS_CERT_PARAM} and {TLS_KEY_PARAM} go together"
                )));
            }
        };
        let certificates = redis::TlsCertificates {
            client_tls,
            root_cert,
        };
        redis::Client::build_with_tls(info, certificates)
            .map_err(|e| config(format!("cannot use the TLS files: {e}")))
    }
}

/// The roots for a server without [`TLS_CA_PARAM`]: none here, so the Redis client loads
/// the system's trusted roots itself, for every new connection.
#[cfg(all(feature = "redis-tls", not(feature = "redis-tls-preload-roots")))]
fn system_roots() -> Result<Option<Vec<u8>>, String> {
    Ok(None)
}

/// The roots for a server without [`TLS_CA_PARAM`]: the system's trusted roots, read now,
/// as one PEM text for the Redis client.
///
/// They are loaded as the Redis client itself would (`rustls-native-certs`, which honours
/// `SSL_CERT_FILE` and `SSL_CERT_DIR`) and just as strictly: an error reading the store, or
/// one certificate in it that is not a usable root, refuses the whole store. The client
/// then never loads them: with the redis crate's feature `tls-rustls-webpki-roots` (which
/// `redis-tls-preload-roots` turns on) its default is a compiled-in list, which it uses
/// only where no roots are given, and they always are.
///
/// # Errors
/// The text of a store that cannot be read, or of a root in it that is not usable.
#[cfg(feature = "redis-tls-preload-roots")]
fn system_roots() -> Result<Option<Vec<u8>>, String> {
    use base64::Engine as _;

    let loaded = rustls_native_certs::load_native_certs();
    if let Some(e) = loaded.errors.first() {
        return Err(format!("cannot read the system's trusted roots: {e}"));
    }
    let mut check = rustls::RootCertStore::empty();
    let mut pem = Vec::new();
    for cert in loaded.certs {
        let text = base64::engine::general_purpose::STANDARD.encode(&cert);
        check.add(cert).map_err(|e| {
            format!("a certificate among the system's trusted roots is not usable: {e}")
        })?;
        pem.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
        for line in text.as_bytes().chunks(64) {
            pem.extend_from_slice(line);
            pem.push(b'\n');
        }
        pem.extend_from_slice(b"-----END CERTIFICATE-----\n");
    }
    Ok(Some(pem))
}

#[cfg(test)]
mod tests {
    use super::super::node::parse_url;
    use super::*;

    #[test]
    fn tls_parameters_leave_the_rest_of_the_url() {
        let (rest, files) =
            TlsFiles::take("rediss://:pw@h:1/0?protocol=resp3&tls_ca=%2Fa%20b.pem#x").unwrap();
        assert_eq!(rest, "rediss://:pw@h:1/0?protocol=resp3#x");
        assert_eq!(files.ca.as_deref(), Some("%2Fa%20b.pem"));
        assert!(!files.is_empty());
        let (rest, files) = TlsFiles::take("redis://h:1/0").unwrap();
        assert_eq!(rest, "redis://h:1/0");
        assert!(files.is_empty());
        // Names are read percent-decoded, as the redis crate reads its own.
        let (rest, files) = TlsFiles::take("rediss://h:1/0?%74ls_ca=/a.pem&db=1").unwrap();
        assert_eq!(rest, "rediss://h:1/0?db=1");
        assert_eq!(files.ca.as_deref(), Some("/a.pem"));
        let refused = TlsFiles::take("rediss://h:1/0?tls_ca=/a.pem&tls%5Fca=/b.pem")
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("needs one file path, given once"),
            "{refused}"
        );
        // A name is quoted where the redacted URL shows it, though it masks the value.
        let refused = TlsFiles::take("rediss://h:1/0?tls_password=Xy8")
            .unwrap_err()
            .to_string();
        assert!(refused.contains("\"tls_password\""), "{refused}");
        assert!(!refused.contains("Xy8"), "{refused}");
    }

    /// Only runs in a build without the feature (`cargo test -p turnstile --features
    /// redis,sqlite --lib redis`): CI builds with every feature.
    #[cfg(not(feature = "redis-tls"))]
    #[test]
    fn rediss_without_the_feature_is_a_config_error_that_names_it() {
        for url in [
            "rediss://127.0.0.1:6380/0",
            "REDISS://u:pw@127.0.0.1:6380/0?tls_ca=/ca.pem",
        ] {
            match parse_url(url) {
                Err(Error::Config(text)) => {
                    assert!(text.contains("redis-tls"), "{text}");
                    assert!(!text.contains("pw@"), "{text}");
                }
                other => panic!("{url}: {other:?}"),
            }
        }
        // TLS files on a plaintext URL are refused either way.
        assert!(matches!(
            parse_url("redis://127.0.0.1:6379/0?tls_ca=/ca.pem"),
            Err(Error::Config(_))
        ));
    }

    /// The name of an unknown TLS parameter and the path of a file that the redacted URL
    /// hides (after a raw `?` in what may be the password) are not quoted.
    #[test]
    fn a_tls_parameter_that_redaction_hides_is_never_quoted() {
        let refused = match TlsFiles::take("rediss://u:Xy8?tls_Xy8=1&tls_ca=/a@h/0") {
            Err(e @ Error::Config(_)) => e.to_string(),
            other => panic!("{other:?}"),
        };
        assert!(refused.contains("unknown TLS parameter in"), "{refused}");
        assert!(!refused.contains("Xy8"), "{refused}");
        let refused = TlsFiles::take("rediss://u:pw@h/0?tls_cafile=/a")
            .unwrap_err()
            .to_string();
        assert!(refused.contains("\"tls_cafile\""), "{refused}");
        #[cfg(feature = "redis-tls")]
        {
            use redis::IntoConnectionInfo;
            let client = |ca: &str, url: &str| {
                let files = TlsFiles {
                    ca: Some(ca.to_owned()),
                    ..TlsFiles::default()
                };
                let info = "rediss://h:6380/0".into_connection_info().unwrap();
                match files.client(info, url) {
                    Err(e @ Error::Config(_)) => e.to_string(),
                    other => panic!("{url}: {other:?}"),
                }
            };
            let refused = client(
                "/no/such/Xy8.pem@h/0",
                "rediss://u:Xy8?tls_ca=/no/such/Xy8.pem@h/0",
            );
            assert!(refused.contains("tls_ca (a path"), "{refused}");
            assert!(!refused.contains("Xy8"), "{refused}");
            assert!(!refused.contains("no/such"), "{refused}");
            let refused = client("/no/such/ca.pem", "rediss://h/0?tls_ca=/no/such/ca.pem");
            assert!(refused.contains("tls_ca=\"/no/such/ca.pem\""), "{refused}");
        }
    }

    #[cfg(feature = "redis-tls")]
    #[test]
    fn rediss_builds_with_the_feature() {
        let (_, shown) = parse_url("rediss://u:pw@127.0.0.1:6380/2").unwrap();
        assert_eq!(shown, "rediss://u@127.0.0.1:6380/2");
    }
}
