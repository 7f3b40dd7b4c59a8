-- Access-token signing keys (issue 20). The private key (PKCS#8 DER) is
-- stored only sealed under MFA_ENCRYPTION_KEY with its kid as associated
-- data; the public key is the JWK the service publishes. The current key
-- is the newest unretired one; a retired key stays (and is published)
-- until `clinic-auth keys prune` or the minute sweep deletes it, once no
-- token it signed can still be valid.
CREATE TABLE signing_keys (
    kid            TEXT PRIMARY KEY NOT NULL,
    alg            TEXT NOT NULL,
    public_jwk     TEXT NOT NULL,
    private_sealed TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    retired_at     INTEGER
) WITHOUT ROWID;
