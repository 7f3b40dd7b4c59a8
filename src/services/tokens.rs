//! JWT issue and verification for access and refresh tokens.
//!
//! The two kinds use different keys *and* carry a `typ` claim, so one can
//! never be replayed as the other even if a bug mixed up the keys. Refresh
//! tokens are HS256 under JWT_REFRESH_SECRET (only this service reads
//! them). Access and enrolment tokens are HS256 under JWT_ACCESS_SECRET,
//! or (issue 20) ES256/EdDSA under the [`KeyRing`]'s current key, with its
//! `kid` in the header. Verification picks the key by `kid` and pins the
//! algorithm to that key's: the `alg` header is never trusted, so neither
//! `none` nor an HS256 token "signed" with a public key passes.
//!
//! Expiry is judged by the injected [`Clock`], not by the library's own
//! reading of the system time, so one clock decides every rule (and tests
//! can move past a token's `exp`).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::signing_keys::KeyRing;
use super::verified_tokens::VerifiedTokens;
use crate::clock::Clock;
use crate::domain::{EmergencyUse, Role, User, UserId};

/// Clock skew tolerated on `exp` between instances (ASVS asks for little).
pub const LEEWAY_SECS: u64 = 5;

const TYP_ACCESS: &str = "access";
const TYP_REFRESH: &str = "refresh";
/// An access token that only the enrolment routes accept (issue 18,
/// MFA_REQUIRED_ROLES): its own `typ`, so a resource server that checks
/// `typ == "access"` refuses it without knowing about the policy.
const TYP_ENROLMENT: &str = "mfa_enrolment";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub sub: String,
    pub role: Role,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    pub typ: String,
    pub iss: String,
    pub aud: String,
    /// The refresh family (sign-in) this token was issued for, so API calls
    /// can tell which session is "current".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// The user's token version when this token was issued: once a cut-off
    /// (sign-out everywhere, password change or reset, role change) raises
    /// the stored version past it, the token is refused. Absent only in
    /// tokens issued before versions existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tv: Option<u64>,
    /// How the sign-in was proven (RFC 8176) and when (`auth_time`), so the
    /// clinic's apps can ask for a two-step sign-in, and step-up can judge
    /// how recent it was. Absent in tokens issued before issue 18.
    #[serde(flatten)]
    pub auth: Authentication,
    /// Present while the user's emergency access lasts (issue 19): what a
    /// downstream clinical app opens up and shows a banner for. `amr` then
    /// also holds `emergency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emergency: Option<EmergencyClaim>,
}

/// The `emergency` claim: when the window opened and closes (seconds since
/// the epoch) and the id of its record, for the downstream app's own log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EmergencyClaim {
    pub started_at: i64,
    pub expires_at: i64,
    pub reason_id: String,
}

/// What kind of bearer token to issue, and for how long.
struct Bearer {
    typ: &'static str,
    ttl: Duration,
    emergency: Option<EmergencyClaim>,
}

impl Bearer {
    fn plain(typ: &'static str, ttl: Duration) -> Self {
        Self {
            typ,
            ttl,
            emergency: None,
        }
    }
}

/// The `amr` value an emergency access token adds.
pub const AMR_EMERGENCY: &str = "emergency";

impl AccessClaims {
    /// An enrolment token (MFA_REQUIRED_ROLES): only the enrolment routes
    /// accept it.
    pub fn is_enrolment(&self) -> bool {
        self.typ == TYP_ENROLMENT
    }
}

/// How and when a sign-in was proven, carried from the sign-in into every
/// token of its refresh family (a rotation proves nothing new).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Authentication {
    /// RFC 8176 method references: `["pwd"]`, or `["pwd","otp","mfa"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
    /// When the user last proved who they are (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
}

impl Authentication {
    /// A sign-in proven at `now` by the password alone.
    pub fn password(now: DateTime<Utc>) -> Self {
        Self {
            amr: vec!["pwd".to_owned()],
            auth_time: Some(now.timestamp()),
        }
    }

    /// A sign-in proven at `now` by the password and a one-time code (an
    /// authenticator code or a recovery code).
    pub fn password_and_code(now: DateTime<Utc>) -> Self {
        Self {
            amr: ["pwd", "otp", "mfa"].map(str::to_owned).to_vec(),
            auth_time: Some(now.timestamp()),
        }
    }

    /// Whether the user proved who they are within `window` of `now`.
    pub fn is_recent(&self, window: Duration, now: DateTime<Utc>) -> bool {
        let window = i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
        self.auth_time
            .is_some_and(|at| at <= now.timestamp() && now.timestamp() - at <= window)
    }

    /// Step-up, the one rule every sensitive change uses: the user proved
    /// who they are within `window` (REAUTH_WINDOW) of `now`, else
    /// `ReauthenticationRequired`.
    pub fn ensure_recent(
        &self,
        window: Duration,
        now: DateTime<Utc>,
    ) -> Result<(), super::ServiceError> {
        if self.is_recent(window, now) {
            Ok(())
        } else {
            Err(super::ServiceError::ReauthenticationRequired)
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RefreshClaims {
    pub sub: String,
    pub jti: String,
    /// Family id: every token descended from one login shares it.
    pub fam: String,
    pub iat: i64,
    pub exp: i64,
    pub typ: String,
    pub iss: String,
    pub aud: String,
    /// The sign-in's [`Authentication`], handed on to the access tokens
    /// each rotation issues.
    #[serde(flatten)]
    pub auth: Authentication,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("token invalid")]
    Invalid,
}

/// A freshly signed access token.
pub struct AccessToken {
    pub token: String,
    pub expires_in: u64,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"[REDACTED]")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// A freshly signed refresh token and the facts the store keeps about it.
pub struct SignedRefresh {
    pub token: SecretString,
    pub jti: String,
    pub expires_at: DateTime<Utc>,
}

/// What access tokens are signed and verified with.
pub enum AccessKeys {
    /// HS256 under JWT_ACCESS_SECRET, exactly as before issue 20.
    Shared {
        encoding: EncodingKey,
        decoding: DecodingKey,
    },
    /// The key ring's current key (ES256 or EdDSA); verified by `kid`.
    Ring(Arc<KeyRing>),
}

impl AccessKeys {
    /// HS256 under `secret` (JWT_ACCESS_ALGORITHM=HS256).
    pub fn shared(secret: &SecretString) -> Self {
        let secret = secret.expose_secret().as_bytes();
        Self::Shared {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }
}

pub struct Tokens {
    access: AccessKeys,
    refresh_encoding: EncodingKey,
    refresh_decoding: DecodingKey,
    access_validation: Validation,
    refresh_validation: Validation,
    issuer: String,
    audience: String,
    access_ttl: Duration,
    clock: Arc<dyn Clock>,
    /// Ring tokens whose signature already checked out (HS256 costs less
    /// to verify than to look up).
    verified: VerifiedTokens,
}

impl Tokens {
    /// Access tokens signed with `access`, refresh tokens HS256 under
    /// `refresh_secret`; both name `issuer` and `audience`.
    pub fn new(
        access: AccessKeys,
        refresh_secret: &SecretString,
        issuer: &str,
        audience: &str,
        access_ttl: Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        if !crate::domain::jwt_crypto::install() {
            tracing::debug!("jsonwebtoken already had a crypto provider: ring is not used");
        }
        let refresh = refresh_secret.expose_secret().as_bytes();
        Self {
            access,
            refresh_encoding: EncodingKey::from_secret(refresh),
            refresh_decoding: DecodingKey::from_secret(refresh),
            access_validation: validation(Algorithm::HS256),
            refresh_validation: validation(Algorithm::HS256),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            access_ttl,
            clock,
            verified: VerifiedTokens::new(access_ttl),
        }
    }

    /// What the library's validation did for exp (with [`LEEWAY_SECS`]),
    /// iss and aud, in its order (exp first, so a token gets the error it
    /// got before), with `now` from the clock. `exp` was parsed as a
    /// non-negative number by the required-claims check.
    fn check(&self, exp: i64, iss: &str, aud: &str) -> Result<(), TokenError> {
        let now = u64::try_from(self.clock.now().timestamp()).unwrap_or(0);
        let exp = u64::try_from(exp).map_err(|_| TokenError::Invalid)?;
        if exp < now.saturating_sub(LEEWAY_SECS) {
            return Err(TokenError::Expired);
        }
        if iss != self.issuer || aud != self.audience {
            return Err(TokenError::Invalid);
        }
        Ok(())
    }

    pub fn issue_access(
        &self,
        user: &User,
        session: Option<&str>,
        auth: &Authentication,
        now: DateTime<Utc>,
    ) -> anyhow::Result<AccessToken> {
        self.issue_bearer(
            user,
            session,
            auth,
            now,
            Bearer::plain(TYP_ACCESS, self.access_ttl),
        )
    }

    /// An access token of an open emergency access window: it carries the
    /// `emergency` claim and `emergency` in `amr`, and never outlives the
    /// window (its lifetime is cut to what is left of it).
    pub fn issue_emergency(
        &self,
        user: &User,
        session: Option<&str>,
        auth: &Authentication,
        now: DateTime<Utc>,
        window: &EmergencyUse,
    ) -> anyhow::Result<AccessToken> {
        let left = (window.expires_at - now).to_std().unwrap_or_default();
        let ttl = self.access_ttl.min(left).max(Duration::from_secs(1));
        let mut auth = auth.clone();
        if !auth.amr.iter().any(|m| m == AMR_EMERGENCY) {
            auth.amr.push(AMR_EMERGENCY.to_owned());
        }
        let claim = EmergencyClaim {
            started_at: window.started_at.timestamp(),
            expires_at: window.expires_at.timestamp(),
            reason_id: window.id.clone(),
        };
        self.issue_bearer(
            user,
            session,
            &auth,
            now,
            Bearer {
                typ: TYP_ACCESS,
                ttl,
                emergency: Some(claim),
            },
        )
    }

    /// An enrolment token: like an access token, but of its own `typ` and
    /// lifetime, accepted only where [`AccessClaims::is_enrolment`] is
    /// allowed (the enrolment routes).
    pub fn issue_enrolment(
        &self,
        user: &User,
        session: Option<&str>,
        auth: &Authentication,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> anyhow::Result<AccessToken> {
        self.issue_bearer(user, session, auth, now, Bearer::plain(TYP_ENROLMENT, ttl))
    }

    fn issue_bearer(
        &self,
        user: &User,
        session: Option<&str>,
        auth: &Authentication,
        now: DateTime<Utc>,
        bearer: Bearer,
    ) -> anyhow::Result<AccessToken> {
        let Bearer {
            typ,
            ttl,
            emergency,
        } = bearer;
        let claims = AccessClaims {
            sub: user.id.as_str().to_owned(),
            role: user.role.clone(),
            iat: now.timestamp(),
            exp: now.timestamp() + ttl.as_secs() as i64,
            jti: new_id(),
            typ: typ.to_owned(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sid: session.map(str::to_owned),
            tv: Some(user.token_version),
            auth: auth.clone(),
            emergency,
        };
        let token = match &self.access {
            AccessKeys::Shared { encoding, .. } => {
                jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, encoding)?
            }
            AccessKeys::Ring(ring) => {
                let signer = ring
                    .signer()
                    .ok_or_else(|| anyhow::anyhow!("no current access-token signing key"))?;
                let mut header = Header::new(signer.alg.jwt());
                header.kid = Some(signer.kid.clone());
                jsonwebtoken::encode(&header, &claims, &signer.key)?
            }
        };
        Ok(AccessToken {
            token,
            expires_in: ttl.as_secs(),
        })
    }

    pub fn verify_access(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let claims = self.verify_bearer(token)?;
        if claims.is_enrolment() {
            return Err(TokenError::Invalid);
        }
        Ok(claims)
    }

    /// An access token or an enrolment token: the caller decides what the
    /// latter may reach.
    pub fn verify_bearer(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let claims: AccessClaims = match &self.access {
            AccessKeys::Shared { decoding, .. } => {
                decode(token, decoding, &self.access_validation)?
            }
            AccessKeys::Ring(ring) => {
                let digest = VerifiedTokens::digest(token);
                match self.verified.get(&digest) {
                    // Seen and verified before, and its key is still
                    // loaded: the signature need not be checked again.
                    Some(seen) if ring.knows(&seen.kid) => seen.claims.clone(),
                    _ => {
                        let kid = jsonwebtoken::decode_header(token)
                            .ok()
                            .and_then(|header| header.kid)
                            .ok_or(TokenError::Invalid)?;
                        let key = ring.verifier(&kid).ok_or(TokenError::Invalid)?;
                        // Only the key's own algorithm: jsonwebtoken refuses
                        // a header that names another (HS256, none) before
                        // any signature check.
                        let claims: AccessClaims =
                            decode(token, &key.key, &validation(key.alg.jwt()))?;
                        self.verified.insert(digest, kid, claims.clone());
                        claims
                    }
                }
            }
        };
        self.check(claims.exp, &claims.iss, &claims.aud)?;
        if claims.typ != TYP_ACCESS && claims.typ != TYP_ENROLMENT {
            return Err(TokenError::Invalid);
        }
        Ok(claims)
    }

    /// [`Self::verify_bearer`], but a token that names a kid this instance
    /// has not loaded first makes the key ring reload (rate-limited): the
    /// key may have been rotated in by another instance or the CLI since
    /// the last minute's reload.
    pub async fn verify_bearer_reloading(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let first = self.verify_bearer(token);
        let AccessKeys::Ring(ring) = &self.access else {
            return first;
        };
        if first.is_ok() {
            return first;
        }
        let Some(kid) = jsonwebtoken::decode_header(token).ok().and_then(|h| h.kid) else {
            return first;
        };
        if ring.verifier(&kid).is_none() && ring.reload_for_unknown(&kid).await {
            return self.verify_bearer(token);
        }
        first
    }

    /// Signs a refresh token of `family` that dies at `expires_at` (the
    /// family's end, not a sliding window).
    pub fn issue_refresh(
        &self,
        user_id: &UserId,
        family: &str,
        auth: &Authentication,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<SignedRefresh> {
        let jti = new_id();
        let claims = RefreshClaims {
            sub: user_id.as_str().to_owned(),
            jti: jti.clone(),
            fam: family.to_owned(),
            iat: now.timestamp(),
            exp: expires_at.timestamp(),
            typ: TYP_REFRESH.to_owned(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            auth: auth.clone(),
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.refresh_encoding,
        )?;
        Ok(SignedRefresh {
            token: SecretString::from(token),
            jti,
            expires_at,
        })
    }

    pub fn verify_refresh(&self, token: &str) -> Result<RefreshClaims, TokenError> {
        let claims: RefreshClaims =
            decode(token, &self.refresh_decoding, &self.refresh_validation)?;
        self.check(claims.exp, &claims.iss, &claims.aud)?;
        if claims.typ != TYP_REFRESH {
            return Err(TokenError::Invalid);
        }
        Ok(claims)
    }
}

/// What the library checks: the signature, that the header names `alg`
/// and nothing else, and that the required claims are present; exp, iss
/// and aud are checked in `check` against the injected clock (the library
/// would read the system time for exp, and checks iss/aud after exp).
fn validation(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.validate_exp = false;
    v.validate_aud = false;
    v.set_required_spec_claims(&["exp", "iat", "sub", "iss", "aud"]);
    v
}

fn decode<T: serde::de::DeserializeOwned>(
    token: &str,
    key: &DecodingKey,
    validation: &Validation,
) -> Result<T, TokenError> {
    use jsonwebtoken::errors::ErrorKind;
    jsonwebtoken::decode::<T>(token, key, validation)
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => TokenError::Expired,
            _ => TokenError::Invalid,
        })
}

/// A random identifier for jti and family ids.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[cfg(test)]
mod tests {
    use base64::Engine;

    use super::*;
    use crate::domain::{EmailAddress, PasswordHash, PersonName};

    fn tokens(secret_a: &str, secret_r: &str) -> Tokens {
        Tokens::new(
            AccessKeys::shared(&SecretString::from(secret_a.to_owned())),
            &SecretString::from(secret_r.to_owned()),
            "http://localhost:8000",
            "Clinic Auth",
            Duration::from_secs(900),
            Arc::new(crate::clock::SystemClock),
        )
    }

    fn user() -> User {
        User {
            id: UserId::new("u1"),
            email: EmailAddress::parse("jane@example.com").unwrap(),
            name: PersonName::parse("Jane").unwrap(),
            role: Role::parse("doctor").unwrap(),
            verified: false,
            password_hash: PasswordHash::new("x".into()),
            created_at: Utc::now(),
            updated_at: Utc::now(),
            tokens_valid_after: None,
            token_version: 0,
            disabled_at: None,
            emergency_access: false,
        }
    }

    fn b64(value: &serde_json::Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
    }

    #[test]
    fn access_round_trip_carries_the_claims() {
        let t = tokens("a".repeat(32).as_str(), "r".repeat(32).as_str());
        let now = Utc::now();
        let issued = t
            .issue_access(&user(), None, &Authentication::default(), now)
            .unwrap();
        let claims = t.verify_access(&issued.token).unwrap();
        assert_eq!(claims.sub, "u1");
        assert_eq!(claims.role.as_str(), "doctor");
        assert_eq!(claims.exp - claims.iat, 900);
        assert_eq!(
            (
                claims.typ.as_str(),
                claims.iss.as_str(),
                claims.aud.as_str()
            ),
            ("access", "http://localhost:8000", "Clinic Auth")
        );
        assert_eq!(issued.expires_in, 900);
    }

    #[test]
    fn kinds_cannot_be_swapped_even_with_one_secret() {
        // Same secret for both: only the typ claim tells them apart.
        let t = tokens("s".repeat(32).as_str(), "s".repeat(32).as_str());
        let now = Utc::now();
        let access = t
            .issue_access(&user(), None, &Authentication::default(), now)
            .unwrap();
        let refresh = t
            .issue_refresh(
                &UserId::new("u1"),
                "fam",
                &Authentication::default(),
                now + chrono::Duration::days(1),
                now,
            )
            .unwrap();
        assert_eq!(t.verify_refresh(&access.token), Err(TokenError::Invalid));
        assert_eq!(
            t.verify_access(refresh.token.expose_secret()),
            Err(TokenError::Invalid)
        );
        assert!(t.verify_refresh(refresh.token.expose_secret()).is_ok());
    }

    #[test]
    fn rejects_tampered_wrong_secret_none_and_expired() {
        let t = tokens("a".repeat(32).as_str(), "r".repeat(32).as_str());
        let other = tokens("b".repeat(32).as_str(), "q".repeat(32).as_str());
        let now = Utc::now();
        let good = t
            .issue_access(&user(), None, &Authentication::default(), now)
            .unwrap()
            .token;

        assert_eq!(other.verify_access(&good), Err(TokenError::Invalid));

        let parts: Vec<&str> = good.split('.').collect();
        let mut claims: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(parts[1])
                .unwrap(),
        )
        .unwrap();
        claims["role"] = "admin".into();
        let tampered = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
        assert_eq!(t.verify_access(&tampered), Err(TokenError::Invalid));

        let none_header = b64(&serde_json::json!({"alg": "none", "typ": "JWT"}));
        assert_eq!(
            t.verify_access(&format!("{none_header}.{}.", parts[1])),
            Err(TokenError::Invalid)
        );

        let old = now - chrono::Duration::hours(1);
        let expired = t
            .issue_access(&user(), None, &Authentication::default(), old)
            .unwrap()
            .token;
        assert_eq!(t.verify_access(&expired), Err(TokenError::Expired));

        assert_eq!(t.verify_access("not-a-jwt"), Err(TokenError::Invalid));
    }

    #[test]
    fn expiry_is_judged_by_the_injected_clock_with_the_leeway() {
        let clock = Arc::new(crate::clock::TestClock::new());
        let t = Tokens::new(
            AccessKeys::shared(&SecretString::from("a".repeat(32))),
            &SecretString::from("r".repeat(32)),
            "http://localhost:8000",
            "Clinic Auth",
            Duration::from_secs(900),
            clock.clone(),
        );
        let token = t
            .issue_access(&user(), None, &Authentication::default(), clock.now())
            .unwrap()
            .token;
        clock.advance(Duration::from_secs(895));
        assert!(t.verify_access(&token).is_ok());
        // Past exp, but within the leeway: still accepted.
        clock.advance(Duration::from_secs(8));
        assert!(t.verify_access(&token).is_ok());
        clock.advance(Duration::from_secs(4));
        assert_eq!(t.verify_access(&token), Err(TokenError::Expired));
    }

    #[test]
    fn an_enrolment_token_is_no_access_token() {
        let t = tokens("a".repeat(32).as_str(), "r".repeat(32).as_str());
        let now = Utc::now();
        let auth = Authentication::password(now);
        let enrolment = t
            .issue_enrolment(&user(), None, &auth, now, Duration::from_secs(600))
            .unwrap();
        assert_eq!(enrolment.expires_in, 600);
        assert_eq!(t.verify_access(&enrolment.token), Err(TokenError::Invalid));
        let claims = t.verify_bearer(&enrolment.token).unwrap();
        assert!(claims.is_enrolment());
        assert_eq!(claims.auth, auth);
        let access = t.issue_access(&user(), None, &auth, now).unwrap();
        assert!(!t.verify_bearer(&access.token).unwrap().is_enrolment());
    }

    #[test]
    fn wrong_issuer_or_audience_is_rejected() {
        let t = tokens("a".repeat(32).as_str(), "r".repeat(32).as_str());
        let elsewhere = Tokens::new(
            AccessKeys::shared(&SecretString::from("a".repeat(32))),
            &SecretString::from("r".repeat(32)),
            "https://other.example",
            "Other",
            Duration::from_secs(900),
            Arc::new(crate::clock::SystemClock),
        );
        let foreign = elsewhere
            .issue_access(&user(), None, &Authentication::default(), Utc::now())
            .unwrap()
            .token;
        assert_eq!(t.verify_access(&foreign), Err(TokenError::Invalid));
    }
}
