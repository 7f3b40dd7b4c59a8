// Creates the clinic_auth database with its collections and indexes when the
// mongodb container first starts on an empty volume (docker-compose.yml
// mounts it into /docker-entrypoint-initdb.d).
//
// The service creates the same indexes itself at start-up (see
// src/storage/mongo.rs, index_plan), idempotently and under the same default
// names, so this script is a convenience for inspecting a fresh database, not
// a requirement. Keep the two lists identical.

const clinic = db.getSiblingDB("clinic_auth");

for (const name of ["users", "refresh_tokens", "reset_tokens", "sessions"]) {
  if (!clinic.getCollectionNames().includes(name)) {
    clinic.createCollection(name);
  }
}

clinic.users.createIndex({ email: 1 }, { unique: true });

clinic.refresh_tokens.createIndex({ jti: 1 }, { unique: true });
clinic.refresh_tokens.createIndex({ token_hash: 1 }, { unique: true });
clinic.refresh_tokens.createIndex({ user_id: 1 });
clinic.refresh_tokens.createIndex({ family_id: 1 });
// TTL: MongoDB deletes a token once expires_at has passed (its monitor runs
// about once a minute; the service checks expiry itself regardless).
clinic.refresh_tokens.createIndex({ expires_at: 1 }, { expireAfterSeconds: 0 });

clinic.reset_tokens.createIndex({ token_hash: 1 }, { unique: true });
clinic.reset_tokens.createIndex({ user_id: 1 });
clinic.reset_tokens.createIndex({ expires_at: 1 }, { expireAfterSeconds: 0 });

// Browser sessions of the portal, keyed by the SHA-256 of the session id.
clinic.sessions.createIndex({ user_id: 1 });
clinic.sessions.createIndex({ expires_at: 1 }, { expireAfterSeconds: 0 });

// The audit trail: one linear hash chain, so seq is unique (two instances
// can never both append the same position); the admin queries filter on
// user or event and page by seq. No TTL: records are never expired.
clinic.audit_events.createIndex({ seq: 1 }, { unique: true });
clinic.audit_events.createIndex({ user_id: 1, seq: -1 });
clinic.audit_events.createIndex({ event: 1, seq: -1 });
clinic.audit_events.createIndex({ time: 1 });

// RATE_LIMIT_BACKEND=store: one counter per limit, client and minute; the
// TTL index removes each once its minute is over.
clinic.rate_limits.createIndex({ expires_at: 1 }, { expireAfterSeconds: 0 });
