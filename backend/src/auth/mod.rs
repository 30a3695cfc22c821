//! Who a connection belongs to: signed tokens (JWT) and the rooms they grant.
//!
//! Without a key configured the relay is anonymous, as the server it replaces was. With
//! `--auth-hmac-secret` (HS256) and/or `--auth-public-key` (a PEM file: RS256 for an RSA
//! key, ES256 for a P-256 key), a typed connection's first frame must be
//! `{"type": "auth", "token": "..."}`; the token says who the user is and which rooms they
//! may read and write:
//!
//! ```json
//! {"sub": "ada", "name": "Ada", "exp": 1764400000,
//!  "rooms": {"support-*": ["read", "write"], "news": ["read"]}}
//! ```
//!
//! Each algorithm is verified only with its own key: an HS256 token is checked against the
//! HMAC secret and nothing else, so a token "signed" with the RSA public key's bytes (the
//! classic key confusion) is refused; `none` is never accepted. `aud` and `iss` are checked
//! when configured. `exp` is required.

pub mod cli;
mod grants;

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

pub use grants::{Grants, Permission};

/// What the plain endpoint `/` allows when authentication is on (plain clients cannot
/// present a token).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PlainAccess {
    /// Refused (HTTP 403 before the upgrade).
    #[default]
    Off,
    /// Plain clients hear the lobby but cannot send.
    ReadOnly,
    /// As without authentication: plain clients read and write the lobby.
    On,
}

/// The authentication settings, from the configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// HS256 secret (its bytes).
    pub hmac_secret: Option<String>,
    /// PEM file of the RS256 or ES256 public key.
    pub public_key: Option<std::path::PathBuf>,
    /// The `aud` tokens must carry, if set.
    pub audience: Option<String>,
    /// The `iss` tokens must carry, if set.
    pub issuer: Option<String>,
    /// Rooms anyone may read without a token when authentication is on.
    pub anonymous_rooms: Vec<String>,
    /// What the plain endpoint allows when authentication is on.
    pub plain: PlainAccess,
    /// How long a new connection has to send `auth`.
    pub timeout: std::time::Duration,
    /// How long past its token's expiry a connection may stay without a `refresh`.
    pub grace: std::time::Duration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            hmac_secret: None,
            public_key: None,
            audience: None,
            issuer: None,
            anonymous_rooms: Vec::new(),
            plain: PlainAccess::Off,
            timeout: std::time::Duration::from_millis(crate::config::defaults::AUTH_TIMEOUT_MS),
            grace: std::time::Duration::from_millis(crate::config::defaults::TOKEN_GRACE_MS),
        }
    }
}

/// Authentication as the relay runs it: the verifier, and what anonymous connections may do.
#[derive(Debug)]
pub struct Auth {
    /// Checks tokens.
    pub verifier: Verifier,
    /// The settings it was built from.
    pub settings: AuthSettings,
    /// What an anonymous connection may do: read the anonymous rooms.
    pub anonymous: Grants,
}

impl Auth {
    /// Authentication as configured; `None` when it is off. A key that cannot be used stops
    /// the relay at start-up.
    pub fn from_settings(settings: &AuthSettings) -> Result<Option<Auth>, KeyError> {
        Ok(Verifier::from_settings(settings)?.map(|verifier| Auth {
            verifier,
            settings: settings.clone(),
            anonymous: Grants::read_only(&settings.anonymous_rooms),
        }))
    }
}

impl std::fmt::Debug for AuthSettings {
    // The secret never goes to a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field(
                "hmac_secret",
                &self.hmac_secret.as_ref().map(|_| "[hidden]"),
            )
            .field("public_key", &self.public_key)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("anonymous_rooms", &self.anonymous_rooms)
            .field("plain", &self.plain)
            .field("timeout", &self.timeout)
            .field("grace", &self.grace)
            .finish()
    }
}

impl AuthSettings {
    /// Whether connections must authenticate.
    pub fn enabled(&self) -> bool {
        self.hmac_secret.is_some() || self.public_key.is_some()
    }
}

/// Shortest HMAC secret accepted, in bytes (HS256's own key size).
pub const MIN_HMAC_SECRET_BYTES: usize = 32;

/// Why a key could not be loaded; the relay refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The secret is too short to resist guessing.
    #[error("--auth-hmac-secret must be at least {MIN_HMAC_SECRET_BYTES} bytes")]
    ShortSecret,
    /// The public key file could not be read.
    #[error("cannot read --auth-public-key {path}: {cause}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// The file holds no RSA or P-256 public key in PEM.
    #[error("--auth-public-key {0} is not an RSA or EC (P-256) public key in PEM")]
    NotAPublicKey(std::path::PathBuf),
}

/// Checks tokens. Cheap to share: built once at start-up.
pub struct Verifier {
    /// The HS256 key, if configured.
    hmac: Option<DecodingKey>,
    /// The public key and its algorithm (RS256 or ES256), if configured.
    public: Option<(Algorithm, DecodingKey)>,
    audience: Option<String>,
    issuer: Option<String>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("hmac", &self.hmac.is_some())
            .field("public", &self.public.as_ref().map(|(alg, _)| alg))
            .finish()
    }
}

/// A verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user id (`sub`).
    pub user: String,
    /// The display name (`name`, or the user id when absent).
    pub name: String,
    /// When the token expires, in seconds since the Unix epoch (`exp`).
    pub expires_at: u64,
    /// The rooms it grants.
    pub grants: Grants,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Past its `exp`: get a new one.
    #[error("the token has expired")]
    Expired,
    /// Before its `nbf`.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// Not signed by a configured key, or signed with an algorithm that key does not use.
    #[error("the token's signature is not valid")]
    BadSignature,
    /// An algorithm the relay is not configured for (`none` included).
    #[error("the token's algorithm is not accepted here")]
    Algorithm,
    /// `aud` or `iss` is not the configured one.
    #[error("the token is for another audience or issuer")]
    WrongAudienceOrIssuer,
    /// Not a JWT, or claims of the wrong shape.
    #[error("the token is malformed: {0}")]
    Malformed(String),
}

/// The claims the relay reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Not valid before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Room pattern → permissions.
    #[serde(default)]
    pub rooms: std::collections::BTreeMap<String, Vec<Permission>>,
}

impl Verifier {
    /// Loads the configured keys; `None` when authentication is off.
    pub fn from_settings(settings: &AuthSettings) -> Result<Option<Verifier>, KeyError> {
        if !settings.enabled() {
            return Ok(None);
        }
        let hmac = match &settings.hmac_secret {
            Some(secret) if secret.len() < MIN_HMAC_SECRET_BYTES => {
                return Err(KeyError::ShortSecret);
            }
            Some(secret) => Some(DecodingKey::from_secret(secret.as_bytes())),
            None => None,
        };
        let public = match &settings.public_key {
            Some(path) => Some(load_public_key(path)?),
            None => None,
        };
        Ok(Some(Verifier {
            hmac,
            public,
            audience: settings.audience.clone(),
            issuer: settings.issuer.clone(),
        }))
    }

    /// Verifies `token` and reads its identity.
    pub fn verify(&self, token: &str, max_name_chars: usize) -> Result<Identity, TokenError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|err| TokenError::Malformed(err.to_string()))?;
        // Each algorithm with its own key only: this is what rules out key confusion.
        let key = match (header.alg, &self.hmac, &self.public) {
            (Algorithm::HS256, Some(hmac), _) => hmac,
            (alg, _, Some((public_alg, public))) if alg == *public_alg => public,
            _ => return Err(TokenError::Algorithm),
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".into());
        }
        let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map_err(|err| classify(err.kind()))?
            .claims;
        let name = claims.name.unwrap_or_else(|| claims.sub.clone());
        common::validate_name(&name, max_name_chars)
            .map_err(|err| TokenError::Malformed(format!("claim `name`: {}", err.message)))?;
        if claims.sub.is_empty() {
            return Err(TokenError::Malformed("claim `sub` is empty".into()));
        }
        Ok(Identity {
            user: claims.sub,
            name,
            expires_at: claims.exp,
            grants: Grants::new(claims.rooms),
        })
    }
}

fn classify(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => TokenError::Algorithm,
        ErrorKind::InvalidAudience | ErrorKind::InvalidIssuer => TokenError::WrongAudienceOrIssuer,
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" || claim == "iss" => {
            TokenError::WrongAudienceOrIssuer
        }
        other => TokenError::Malformed(format!("{other:?}")),
    }
}

/// An RSA public key (RS256) or a P-256 one (ES256), from a PEM file.
fn load_public_key(path: &Path) -> Result<(Algorithm, DecodingKey), KeyError> {
    let pem = std::fs::read(path).map_err(|cause| KeyError::Read {
        path: path.to_owned(),
        cause,
    })?;
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((Algorithm::RS256, key));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        return Ok((Algorithm::ES256, key));
    }
    Err(KeyError::NotAPublicKey(path.to_owned()))
}

/// Why a token could not be signed.
#[derive(Debug, thiserror::Error)]
#[error("cannot sign a token: {0}")]
pub struct SignError(String);

/// How to sign development tokens (`relay token`): the HMAC secret, or a private key in
/// PEM (RSA: RS256; P-256: ES256).
pub enum Signer {
    /// HS256.
    Hmac(String),
    /// The PEM of a private key.
    PrivateKey(Vec<u8>),
}

impl Signer {
    /// Signs `claims`.
    pub fn sign(&self, claims: &Claims) -> Result<String, SignError> {
        let (alg, key) = match self {
            Signer::Hmac(secret) => (
                Algorithm::HS256,
                EncodingKey::from_secret(secret.as_bytes()),
            ),
            Signer::PrivateKey(pem) => {
                if let Ok(key) = EncodingKey::from_rsa_pem(pem) {
                    (Algorithm::RS256, key)
                } else {
                    let key = EncodingKey::from_ec_pem(pem).map_err(|_| {
                        SignError("the private key is not an RSA or P-256 key in PEM".into())
                    })?;
                    (Algorithm::ES256, key)
                }
            }
        };
        jsonwebtoken::encode(&Header::new(alg), claims, &key)
            .map_err(|err| SignError(err.to_string()))
    }
}

#[cfg(test)]
mod tests;
