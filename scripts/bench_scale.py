"""The `scale` scenario of scripts/bench.py: the service with a clinic
group's worth of data in its store.

A fresh server applies the migrations and registers one account through
the API (so the password hash is a real argon2id hash of the bench
password); then it is stopped and the SQLite file is filled directly, not
through argon2: `--scale-users` users (all with that hash, so any of them
can sign in) and one live sign-in (an unrevoked, unexpired refresh token)
each. The server starts again on that file (its exec-to-healthy time is
the start-up figure), and `me`, `refresh` and `login` are measured on it
exactly as on the empty database: in rounds against `health` runs (`me`,
`refresh`) or argon2id baseline runs (`login`) around them, so the two can
be compared as ratios even when the machine drifts between them.

Budget (BENCHMARKS.md): each ratio within 15 % of the empty database's,
start-up under 1 s. Also reported: database size per user.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
import uuid

# Rows per executemany: large enough that Python's loop is not the cost,
# small enough to keep memory flat.
CHUNK = 50_000
NOW_MS = lambda: int(time.time() * 1000)  # noqa: E731
SEVEN_DAYS_MS = 7 * 86_400_000


def user_rows(n: int, password_hash: str, now: int):
    for i in range(n):
        yield (uuid.uuid4().hex, f"u{i}@scale.example", password_hash, f"Scale User {i}",
               "doctor", 1, now, now)


def refresh_rows(user_ids: list[str], now: int):
    for uid in user_ids:
        # A random stored hash, as a real token's SHA-256 would be.
        yield (uid, uuid.uuid4().hex, hashlib.sha256(os.urandom(16)).hexdigest(),
               uuid.uuid4().hex, "Mozilla/5.0 (scale bench)", "10.0.0.1", 0,
               now + SEVEN_DAYS_MS, now)


def load(db: str, n: int, log) -> dict:
    """Fills the service's (stopped) SQLite database; returns timings."""
    t0 = time.perf_counter()
    con = sqlite3.connect(db, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=OFF")
        (password_hash,) = con.execute("SELECT password_hash FROM users LIMIT 1").fetchone()
        now = NOW_MS()
        ids: list[str] = []
        con.execute("BEGIN")
        rows = user_rows(n, password_hash, now)
        while True:
            chunk = [r for _, r in zip(range(CHUNK), rows)]
            if not chunk:
                break
            ids.extend(r[0] for r in chunk)
            con.executemany(
                "INSERT INTO users (id, email, password_hash, name, role, verified, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", chunk)
        con.execute("COMMIT")
        users_s = time.perf_counter() - t0
        log(f"  scale: {n} users loaded in {users_s:.1f} s")
        con.execute("BEGIN")
        rows = refresh_rows(ids, now)
        while True:
            chunk = [r for _, r in zip(range(CHUNK), rows)]
            if not chunk:
                break
            con.executemany(
                "INSERT INTO refresh_tokens (user_id, jti, token_hash, family_id, user_agent, "
                "ip_address, revoked, expires_at, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", chunk)
        con.execute("COMMIT")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.execute("ANALYZE")
    finally:
        con.close()
    total_s = time.perf_counter() - t0
    log(f"  scale: {n} live sign-ins loaded; {total_s:.1f} s in all")
    return {"users": n, "load_s": round(total_s, 1)}


def db_bytes(db: str) -> int:
    return sum(os.path.getsize(db + suffix) for suffix in ("", "-wal", "-shm")
               if os.path.exists(db + suffix))


def run(bench, server, n: int, log, password: str) -> None:
    """`bench` is scripts/bench.py's Bench, `server` a fresh Server."""
    server.register(f"scale-seed-{bench.run_id}@scale.example")
    server.stop()
    db = server.env["DATABASE_URL"].removeprefix("sqlite://")
    info = load(db, n, log)
    size = db_bytes(db)
    server.start(limit_s=60)
    info.update({
        "startup_ms": round(server.startup_ms, 1),
        "idle_rss_mib": round(server.idle_rss_mib, 1),
        "db_bytes": size,
        "db_bytes_per_user": round(size / max(n, 1)),
    })
    bench.scale = info
    log(f"  scale: restarted on {size / 2**20:.0f} MiB ({info['db_bytes_per_user']} bytes per "
        f"user with its sign-in) in {server.startup_ms:.1f} ms, idle RSS "
        f"{server.idle_rss_mib:.1f} MiB")
    c = bench.a.connections
    # me: a loaded user in the middle of the table.
    email = f"u{n // 2}@scale.example"
    access, _ = server.login(email)
    bench.measured("scale: me", server, "/api/auth/me", "get.lua", c, 2, 200,
                   env_run={"BENCH_BEARER": access}, like="me")
    # refresh: one chain per connection per round, from sign-ins of loaded
    # users spread over the table.
    runs = 1 + (bench.a.rounds if bench.a.rounds > 1 else 1)
    cookies = []
    for i in range(runs * c):
        cookies.append(server.login(f"u{(i * 7919) % n}@scale.example")[1])
    files = []
    for i in range(runs):
        f = server.dir / f"scale-tokens-{i}.txt"
        f.write_text("\n".join(cookies[i * c:(i + 1) * c]) + "\n")
        files.append({"BENCH_TOKENS": str(f)})
    bench.measured("scale: refresh", server, "/api/auth/refresh", "refresh.lua", c, c, 200,
                   env_warm=files[0], env_run=files[1], env_rounds=files[1:], like="refresh")
    bench.measured("scale: login", server, "/api/auth/login", "login.lua", c, 2, 200,
                   env_run={"BENCH_EMAIL": f"u{n - 1}@scale.example",
                            "BENCH_PASSWORD": password}, timeout_s=30, like="login")
