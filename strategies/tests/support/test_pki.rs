//! Certificates for the TLS tests, made at run time with rcgen (no `openssl` CLI needed): a
//! CA; a server certificate for 127.0.0.1 and localhost and a client certificate, both
//! signed by it; and a second CA that signed nothing here (a client trusting only it must
//! refuse the server). PEM files in a temporary directory, removed on drop. Include it
//! beside `support/redis_server.rs`, as module `redis_server`.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::redis_server::ServerTls;

/// The files, in one temporary directory.
pub struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    /// Makes every certificate and key and writes them out.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, pem: String| std::fs::write(dir.path().join(name), pem).unwrap();

        let (ca_pem, ca) = new_ca("turnstile test CA");
        write("ca.pem", ca_pem);
        let (other_pem, _) = new_ca("some other CA");
        write("other-ca.pem", other_pem);
        for (name, sans, usage) in [
            (
                "server",
                vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
                ExtendedKeyUsagePurpose::ServerAuth,
            ),
            ("client", Vec::new(), ExtendedKeyUsagePurpose::ClientAuth),
        ] {
            let mut params = CertificateParams::new(sans).unwrap();
            params.extended_key_usages.push(usage);
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &ca).unwrap();
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}.key"), key.serialize_pem());
        }
        TestPki { dir }
    }

    /// A file of the directory: `ca.pem`, `other-ca.pem`, `server.pem`, `server.key`,
    /// `client.pem`, `client.key`.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What a server with the server certificate is started with.
    pub fn server(&self, require_client_cert: bool) -> ServerTls {
        ServerTls {
            cert: self.file("server.pem"),
            key: self.file("server.key"),
            ca: self.file("ca.pem"),
            require_client_cert,
            dir: self.dir.path().to_owned(),
        }
    }
}

/// A self-signed CA: its certificate's PEM and the issuer that signs with it.
fn new_ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}
