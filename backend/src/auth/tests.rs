//! Token verification: every way a token can be wrong is refused, and for the right reason.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";
const NAME_CHARS: usize = 32;

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/auth")
        .join(name)
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn claims() -> Claims {
    Claims {
        sub: "ada".into(),
        name: Some("Ada".into()),
        exp: now() + 3600,
        nbf: None,
        iat: Some(now()),
        aud: None,
        iss: None,
        rooms: BTreeMap::from([
            (
                "support-*".into(),
                vec![Permission::Read, Permission::Write],
            ),
            ("news".into(), vec![Permission::Read]),
        ]),
    }
}

fn hmac_only() -> Verifier {
    verifier(AuthSettings {
        hmac_secret: Some(SECRET.into()),
        ..AuthSettings::default()
    })
}

fn verifier(settings: AuthSettings) -> Verifier {
    Verifier::from_settings(&settings).unwrap().unwrap()
}

fn hs256(claims: &Claims) -> String {
    Signer::Hmac(SECRET.into()).sign(claims).unwrap()
}

fn signed_with(private_key: &str, claims: &Claims) -> String {
    Signer::PrivateKey(std::fs::read(fixture(private_key)).unwrap())
        .sign(claims)
        .unwrap()
}

fn base64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with this header and claims and a made-up signature.
fn forged(header: &str, claims: &Claims, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        base64url(header.as_bytes()),
        base64url(&serde_json::to_vec(claims).unwrap()),
        base64url(signature)
    )
}

#[test]
fn a_valid_token_gives_its_user_name_expiry_and_grants() {
    let identity = hmac_only().verify(&hs256(&claims()), NAME_CHARS).unwrap();
    assert_eq!(
        (identity.user.as_str(), identity.name.as_str()),
        ("ada", "Ada")
    );
    assert_eq!(identity.expires_at, claims().exp);
    assert!(identity.grants.allows("support-7", Permission::Write));
    assert!(!identity.grants.allows("news", Permission::Write));
    let unnamed = Claims {
        name: None,
        ..claims()
    };
    let identity = hmac_only().verify(&hs256(&unnamed), NAME_CHARS).unwrap();
    assert_eq!(
        identity.name, "ada",
        "the user id stands in for a missing name"
    );
}

#[test]
fn rs256_and_es256_tokens_verify_with_their_public_keys() {
    for (private, public) in [
        ("rsa-private.pem", "rsa-public.pem"),
        ("ec-private.pem", "ec-public.pem"),
    ] {
        let verifier = verifier(AuthSettings {
            public_key: Some(fixture(public)),
            ..AuthSettings::default()
        });
        let token = signed_with(private, &claims());
        assert_eq!(
            verifier.verify(&token, NAME_CHARS).unwrap().user,
            "ada",
            "{public}"
        );
        assert_eq!(
            verifier.verify(&hs256(&claims()), NAME_CHARS),
            Err(TokenError::Algorithm),
            "no HMAC secret configured: HS256 is not accepted"
        );
    }
}

#[test]
fn expired_and_not_yet_valid_tokens_are_refused() {
    let expired = Claims {
        exp: now() - 1,
        ..claims()
    };
    assert_eq!(
        hmac_only().verify(&hs256(&expired), NAME_CHARS),
        Err(TokenError::Expired)
    );
    let early = Claims {
        nbf: Some(now() + 600),
        ..claims()
    };
    assert_eq!(
        hmac_only().verify(&hs256(&early), NAME_CHARS),
        Err(TokenError::NotYetValid)
    );
}

#[test]
fn a_token_signed_with_another_key_is_refused() {
    let other = Signer::Hmac("another-secret-of-at-least-32-bytes!".into())
        .sign(&claims())
        .unwrap();
    assert_eq!(
        hmac_only().verify(&other, NAME_CHARS),
        Err(TokenError::BadSignature)
    );
    // A token whose claims were changed after signing.
    let token = hs256(&claims());
    let mut parts: Vec<&str> = token.split('.').collect();
    let richer = Claims {
        rooms: BTreeMap::from([("*".into(), vec![Permission::Write])]),
        ..claims()
    };
    let payload = base64url(&serde_json::to_vec(&richer).unwrap());
    parts[1] = &payload;
    assert_eq!(
        hmac_only().verify(&parts.join("."), NAME_CHARS),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn alg_none_is_never_accepted() {
    for header in [
        r#"{"alg":"none","typ":"JWT"}"#,
        r#"{"alg":"None","typ":"JWT"}"#,
        r#"{"alg":"NONE"}"#,
    ] {
        let token = forged(header, &claims(), b"");
        let refused = hmac_only().verify(&token, NAME_CHARS);
        assert!(
            matches!(
                refused,
                Err(TokenError::Algorithm | TokenError::Malformed(_))
            ),
            "{header}: {refused:?}"
        );
    }
}

#[test]
fn an_hs256_token_signed_with_the_public_keys_bytes_is_refused() {
    let public_pem = std::fs::read_to_string(fixture("rsa-public.pem")).unwrap();
    let confused = Signer::Hmac(public_pem).sign(&claims()).unwrap();
    let public_only = verifier(AuthSettings {
        public_key: Some(fixture("rsa-public.pem")),
        ..AuthSettings::default()
    });
    assert_eq!(
        public_only.verify(&confused, NAME_CHARS),
        Err(TokenError::Algorithm)
    );
    let both = verifier(AuthSettings {
        hmac_secret: Some(SECRET.into()),
        public_key: Some(fixture("rsa-public.pem")),
        ..AuthSettings::default()
    });
    assert_eq!(
        both.verify(&confused, NAME_CHARS),
        Err(TokenError::BadSignature)
    );
    // And an RS256 header on an HMAC signature.
    let token = hs256(&claims());
    let body = token.split_once('.').unwrap().1;
    let relabelled = format!("{}.{body}", base64url(br#"{"alg":"RS256","typ":"JWT"}"#));
    assert!(both.verify(&relabelled, NAME_CHARS).is_err());
}

#[test]
fn audience_and_issuer_are_checked_when_configured() {
    let strict = verifier(AuthSettings {
        hmac_secret: Some(SECRET.into()),
        audience: Some("relay".into()),
        issuer: Some("shop".into()),
        ..AuthSettings::default()
    });
    let right = Claims {
        aud: Some("relay".into()),
        iss: Some("shop".into()),
        ..claims()
    };
    assert!(strict.verify(&hs256(&right), NAME_CHARS).is_ok());
    for wrong in [
        Claims {
            aud: Some("other".into()),
            ..right.clone()
        },
        Claims {
            iss: Some("other".into()),
            ..right.clone()
        },
        Claims {
            aud: None,
            ..right.clone()
        },
        Claims {
            iss: None,
            ..right.clone()
        },
    ] {
        assert_eq!(
            strict.verify(&hs256(&wrong), NAME_CHARS),
            Err(TokenError::WrongAudienceOrIssuer),
            "{wrong:?}"
        );
    }
}

#[test]
fn malformed_tokens_are_refused_as_malformed() {
    for token in [
        "",
        "abc",
        "a.b.c",
        "....",
        "eyJhbGciOiJIUzI1NiJ9.%%%.x",
        "\u{0}",
    ] {
        assert!(
            matches!(
                hmac_only().verify(token, NAME_CHARS),
                Err(TokenError::Malformed(_))
            ),
            "{token:?}"
        );
    }
    let long_name = Claims {
        name: Some("x".repeat(NAME_CHARS + 1)),
        ..claims()
    };
    assert!(matches!(
        hmac_only().verify(&hs256(&long_name), NAME_CHARS),
        Err(TokenError::Malformed(_))
    ));
    let bad_permission = r#"{"sub":"ada","exp":99999999999,"rooms":{"a":["admin"]}}"#;
    let claims: serde_json::Value = serde_json::from_str(bad_permission).unwrap();
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    assert!(matches!(
        hmac_only().verify(&token, NAME_CHARS),
        Err(TokenError::Malformed(_))
    ));
}

#[test]
fn keys_that_cannot_be_trusted_stop_the_relay_at_start() {
    let short = AuthSettings {
        hmac_secret: Some("short".into()),
        ..AuthSettings::default()
    };
    assert!(matches!(
        Verifier::from_settings(&short),
        Err(KeyError::ShortSecret)
    ));
    let not_a_key = AuthSettings {
        public_key: Some(fixture("rsa-private.pem").with_file_name("missing.pem")),
        ..AuthSettings::default()
    };
    assert!(matches!(
        Verifier::from_settings(&not_a_key),
        Err(KeyError::Read { .. })
    ));
    assert!(
        Verifier::from_settings(&AuthSettings::default())
            .unwrap()
            .is_none()
    );
}

proptest! {
    #[test]
    fn the_token_parser_never_panics(token in ".{0,200}") {
        let _ = hmac_only().verify(&token, NAME_CHARS);
    }

    #[test]
    fn jwt_shaped_garbage_never_panics_or_passes(
        header in "[A-Za-z0-9_-]{0,40}",
        payload in "[A-Za-z0-9_-]{0,80}",
        signature in "[A-Za-z0-9_-]{0,60}",
    ) {
        let token = format!("{header}.{payload}.{signature}");
        prop_assert!(hmac_only().verify(&token, NAME_CHARS).is_err());
    }
}
