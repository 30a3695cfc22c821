//! `relay token`: prints a signed token, for development and tests. An application mints
//! its users' tokens itself (see `examples/php/token.php`); this signs with the same key the
//! relay verifies with.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use clap::Parser;

use super::{Claims, Permission, Signer};

/// `relay token --sub ada --name Ada --room 'lobby:read,write' --ttl 1h`
#[derive(Debug, Parser)]
#[command(name = "relay token", about = "Print a signed token for development")]
pub struct TokenArgs {
    /// The user id (`sub`).
    #[arg(long)]
    pub sub: String,
    /// The display name (`name`).
    #[arg(long)]
    pub name: Option<String>,
    /// A room pattern and what it grants, `pattern:read,write`; repeat for more rooms.
    #[arg(long = "room", value_parser = parse_room)]
    pub rooms: Vec<(String, Vec<Permission>)>,
    /// How long the token is valid: `90s`, `30m`, `1h`, `2d`.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    pub ttl: Duration,
    /// The `aud` claim.
    #[arg(long)]
    pub aud: Option<String>,
    /// The `iss` claim.
    #[arg(long)]
    pub iss: Option<String>,
    /// Sign with this HS256 secret (the relay's `--auth-hmac-secret`).
    #[arg(long, env = "RELAY_AUTH_HMAC_SECRET", hide_env_values = true)]
    pub auth_hmac_secret: Option<String>,
    /// Or sign with this private key (PEM; RSA: RS256, P-256: ES256).
    #[arg(long, env = "RELAY_AUTH_PRIVATE_KEY")]
    pub private_key: Option<PathBuf>,
}

impl TokenArgs {
    /// The token these arguments describe.
    pub fn token(self, now_secs: u64) -> anyhow::Result<String> {
        let signer = match (self.auth_hmac_secret, self.private_key) {
            (Some(secret), None) => Signer::Hmac(secret),
            (None, Some(path)) => Signer::PrivateKey(std::fs::read(&path).map_err(|err| {
                anyhow::anyhow!("cannot read --private-key {}: {err}", path.display())
            })?),
            _ => anyhow::bail!("give exactly one of --auth-hmac-secret and --private-key"),
        };
        let claims = Claims {
            sub: self.sub,
            name: self.name,
            exp: now_secs + self.ttl.as_secs(),
            nbf: None,
            iat: Some(now_secs),
            aud: self.aud,
            iss: self.iss,
            rooms: self.rooms.into_iter().collect::<BTreeMap<_, _>>(),
        };
        Ok(signer.sign(&claims)?)
    }
}

fn parse_room(value: &str) -> Result<(String, Vec<Permission>), String> {
    let (pattern, permissions) = value
        .rsplit_once(':')
        .ok_or("expected `pattern:read,write`")?;
    let permissions = permissions
        .split(',')
        .map(|permission| match permission.trim() {
            "read" => Ok(Permission::Read),
            "write" => Ok(Permission::Write),
            other => Err(format!("unknown permission `{other}` (read, write)")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((pattern.to_owned(), permissions))
}

fn parse_ttl(value: &str) -> Result<Duration, String> {
    let (number, unit) = value.split_at(value.len().saturating_sub(1));
    let number: u64 = number
        .parse()
        .map_err(|_| format!("expected a number and a unit (s, m, h, d), got `{value}`"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit in `{value}` (s, m, h, d)")),
    };
    Ok(Duration::from_secs(number * seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{AuthSettings, Verifier};

    #[test]
    fn a_development_token_verifies_with_the_relays_key() {
        let secret = "a-development-secret-of-32-bytes!!";
        let args = TokenArgs::try_parse_from([
            "relay token",
            "--sub",
            "ada",
            "--name",
            "Ada",
            "--room",
            "lobby:read,write",
            "--room",
            "news-*:read",
            "--ttl",
            "2h",
            "--auth-hmac-secret",
            secret,
        ])
        .unwrap();
        let now = jsonwebtoken::get_current_timestamp();
        let token = args.token(now).unwrap();
        let verifier = Verifier::from_settings(&AuthSettings {
            hmac_secret: Some(secret.into()),
            ..AuthSettings::default()
        })
        .unwrap()
        .unwrap();
        let identity = verifier.verify(&token, 32).unwrap();
        assert_eq!(
            (identity.user.as_str(), identity.name.as_str()),
            ("ada", "Ada")
        );
        assert_eq!(identity.expires_at, now + 7200);
        assert!(identity.grants.allows("lobby", Permission::Write));
        assert!(identity.grants.allows("news-1", Permission::Read));
        assert!(!identity.grants.allows("news-1", Permission::Write));
    }

    #[test]
    fn bad_arguments_are_refused_with_a_reason() {
        assert!(parse_room("lobby").is_err());
        assert!(parse_room("lobby:admin").is_err());
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert!(parse_ttl("1y").is_err());
        assert!(parse_ttl("h").is_err());
    }
}
