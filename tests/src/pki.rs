//! A throwaway public key infrastructure for TLS tests, made with rcgen: a CA, and server or client
//! certificates it signs.

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};

/// A CA: its certificate in PEM and the issuer that signs leaves.
pub fn make_ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().expect("a CA key");
    let certificate = params.self_signed(&key).expect("a self-signed CA");
    (certificate.pem(), Issuer::new(params, key))
}

/// A leaf certificate signed by `issuer` for `names` (the first is also its common name), for a
/// server or a client; (certificate, key) PEM.
pub fn make_leaf(issuer: &Issuer<'static, KeyPair>, names: &[&str], client: bool) -> (String, String) {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("leaf names");
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.extended_key_usages =
        vec![if client { ExtendedKeyUsagePurpose::ClientAuth } else { ExtendedKeyUsagePurpose::ServerAuth }];
    let key = KeyPair::generate().expect("a leaf key");
    let certificate = params.signed_by(&key, issuer).expect("a signed leaf");
    (certificate.pem(), key.serialize_pem())
}
