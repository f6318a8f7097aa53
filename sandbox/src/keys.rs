//! RSA keys for the sandbox: service-account keys (as in a downloaded key file)
//! and Google's own ID-token signing keys, with their JWKS, PEM certificate and
//! signing/verification forms.
//!
//! Everything here is pure computation (no HTTP, no shared state). It must not
//! log or expose private key material except through [`RsaKey::pkcs8_pem`],
//! which exists only to write key files the way Google hands them out.

use std::fmt;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use rand::Rng as _;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Serialize;

/// Why a key could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("generate RSA key: {0}")]
    Generate(String),
    #[error("self-sign certificate: {0}")]
    Certificate(String),
    #[error("sign JWT: {0}")]
    Sign(String),
}

/// One RSA-2048 key pair with every encoding the sandbox needs.
pub(crate) struct RsaKey {
    kid: String,
    pkcs8_pem: SecretString,
    encoding: EncodingKey,
    decoding: DecodingKey,
    n_b64: String,
    e_b64: String,
    cert_pem: String,
}

impl fmt::Debug for RsaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RsaKey")
            .field("kid", &self.kid)
            .field("private_key", &"[REDACTED]")
            .finish()
    }
}

impl RsaKey {
    /// A fresh key named `kid`, with a self-signed X.509 certificate whose
    /// subject CN is `common_name` (what `/oauth2/v1/certs` publishes).
    pub(crate) fn generate(kid: String, common_name: &str) -> Result<Self, KeyError> {
        let pair =
            KeyPair::generate(KeySize::Rsa2048).map_err(|e| KeyError::Generate(e.to_string()))?;
        let der: Pkcs8V1Der<'static> = pair
            .as_der()
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        let pkcs8_pem = pem_encode("PRIVATE KEY", der.as_ref());
        let encoding = EncodingKey::from_rsa_pem(pkcs8_pem.as_bytes())
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        let public = pair.public_key();
        let n = public.modulus();
        let e = public.exponent();
        let n = n.big_endian_without_leading_zero();
        let e = e.big_endian_without_leading_zero();
        let decoding = DecodingKey::from_rsa_raw_components(n, e);
        let n_b64 = URL_SAFE_NO_PAD.encode(n);
        let e_b64 = URL_SAFE_NO_PAD.encode(e);

        let signer =
            rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(&pkcs8_pem, &rcgen::PKCS_RSA_SHA256)
                .map_err(|e| KeyError::Certificate(e.to_string()))?;
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2049, 12, 31);
        let cert = params
            .self_signed(&signer)
            .map_err(|e| KeyError::Certificate(e.to_string()))?;

        Ok(Self {
            kid,
            pkcs8_pem: SecretString::from(pkcs8_pem),
            encoding,
            decoding,
            n_b64,
            e_b64,
            cert_pem: cert.pem(),
        })
    }

    pub(crate) fn kid(&self) -> &str {
        &self.kid
    }

    /// The private key as `-----BEGIN PRIVATE KEY-----` PEM (key files only).
    pub(crate) fn pkcs8_pem(&self) -> &str {
        self.pkcs8_pem.expose_secret()
    }

    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }

    /// The self-signed certificate, PEM with a trailing newline.
    pub(crate) fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// This key as a JWKS entry, as `https://www.googleapis.com/oauth2/v3/certs` lists it.
    pub(crate) fn jwk(&self) -> Jwk {
        Jwk {
            kty: "RSA",
            alg: "RS256",
            use_: "sig",
            kid: self.kid.clone(),
            n: self.n_b64.clone(),
            e: self.e_b64.clone(),
        }
    }

    /// Sign `claims` as an RS256 JWT with `kid` and `typ: JWT` in the header.
    pub(crate) fn sign<T: Serialize>(&self, claims: &T) -> Result<String, KeyError> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| KeyError::Sign(e.to_string()))
    }
}

/// A JWKS entry. Field order matches Google's.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Jwk {
    kty: &'static str,
    alg: &'static str,
    #[serde(rename = "use")]
    use_: &'static str,
    kid: String,
    n: String,
    e: String,
}

/// PEM-armour `der` with 64-character lines and a trailing newline.
pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// `len` random lowercase hex digits (key ids look like this at Google).
pub(crate) fn random_hex(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap_or('0'))
        .collect()
}

/// A 21-digit numeric id like a service account's `uniqueId` (starts with 1).
pub(crate) fn random_unique_id() -> String {
    let mut rng = rand::rng();
    let mut s = String::from("1");
    for _ in 0..20 {
        s.push(char::from_digit(rng.random_range(0..10), 10).unwrap_or('0'));
    }
    s
}

/// `len` random characters from the URL-safe alphabet.
pub(crate) fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::Validation;

    #[test]
    fn signed_jwt_verifies_with_the_public_components() {
        let key = RsaKey::generate("k1".into(), "test").expect("key");
        let token = key
            .sign(&serde_json::json!({"sub": "x", "exp": 4_000_000_000u64}))
            .expect("sign");
        let header = jsonwebtoken::decode_header(&token).expect("header");
        assert_eq!(header.kid.as_deref(), Some("k1"));
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        let mut v = Validation::new(Algorithm::RS256);
        v.validate_aud = false;
        let data =
            jsonwebtoken::decode::<serde_json::Value>(&token, key.decoding_key(), &v).expect("ok");
        assert_eq!(data.claims["sub"], "x");
        // The JWKS form verifies too.
        let jwk = key.jwk();
        let dk = DecodingKey::from_rsa_components(&jwk.n, &jwk.e).expect("components");
        jsonwebtoken::decode::<serde_json::Value>(&token, &dk, &v).expect("jwk verifies");
    }

    #[test]
    fn pem_forms_look_like_googles() {
        let key = RsaKey::generate("k2".into(), "test").expect("key");
        assert!(key.pkcs8_pem().starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(key.pkcs8_pem().ends_with("-----END PRIVATE KEY-----\n"));
        assert!(key.cert_pem().starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(
            key.cert_pem()
                .trim_end()
                .ends_with("-----END CERTIFICATE-----")
        );
        assert!(!format!("{key:?}").contains("PRIVATE"));
    }

    #[test]
    fn random_ids_have_the_right_shape() {
        let id = random_unique_id();
        assert_eq!(id.len(), 21);
        assert!(id.chars().all(|c| c.is_ascii_digit()));
        let hex = random_hex(40);
        assert_eq!(hex.len(), 40);
        assert!(hex.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
