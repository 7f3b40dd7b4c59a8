#!/usr/bin/env python3
"""Benchmark suite for Clinic Auth (`make bench`). Python 3 stdlib only.

Builds the release binary, starts it on the embedded SQLite store with a
fresh data directory (one fresh server per scenario), drives it over
loopback (127.0.0.1 only) with wrk, measures throughput, latency, errors,
server CPU time and memory, compares login/register with the raw argon2id
rate of this machine (`cargo bench --bench argon2_baseline`), prints the
budget checks and writes target/bench/results.{md,json}.

    python3 scripts/bench.py                       # defaults: 16 conns, 3 s warm-up, 10 s
    python3 scripts/bench.py --duration 2 --warmup 1 --scenarios health,me
    python3 scripts/bench.py --strict              # exit 1 when a budget line fails
    python3 scripts/bench.py --write-doc           # also refresh BENCHMARKS.md's table

Every load is bounded by time (wrk -d, plus a hard subprocess timeout) and
targets 127.0.0.1 only; every server and load generator started here is
stopped on exit, also on error or Ctrl-C. See BENCHMARKS.md for the method.
"""

from __future__ import annotations

import argparse
import array
import concurrent.futures
import datetime as dt
import fcntl
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LUA_DIR = REPO / "scripts" / "bench"
HOST = "127.0.0.1"  # never anything else: loopback only
PASSWORD = "Str0ng!Pass123"
WRONG_PASSWORD = "Wr0ng!Pass456-x"
# The most expensive password to estimate that the service accepts: 128
# characters (the cap) full of l33t substitutions, ~50 ms of zxcvbn.
LONG_PASSWORD = ("a1!0@3$5|7+8" * 11)[:128]

ALL_SCENARIOS = ["health", "me", "refresh", "login", "mfa_verify", "login_fail", "register", "mixed",
                 "strength", "flood", "scale"]
BY_DESIGN = {429, 503}
# Scenarios whose every request costs one argon2id run: measured against a
# baseline taken right before and after them.
HASHING_BOUND = ("login", "login_fail", "register", "mixed", "flood")
# Of those, the ones with a budget against the baseline: their measured time
# is split into --rounds rounds with a baseline run between each two.
ROUNDS = ("login", "login_fail", "register")
# Scenarios with a budget against `health`: their measured time is split into
# --rounds rounds on their own server with a `health` run between each two.
HEALTH_ROUNDS = ("me", "refresh")

# Config names the service reads: stripped from the inherited environment so
# that only what the bench sets applies.
SERVICE_VARS = [
    "APP_NAME", "APP_URL", "HOST", "PORT", "APP_ENV", "DATABASE_URL", "MONGO_URI",
    "JWT_ACCESS_SECRET", "JWT_REFRESH_SECRET", "JWT_ACCESS_EXPIRES", "JWT_REFRESH_EXPIRES",
    "REFRESH_IDLE_TIMEOUT", "LOGIN_MAX_FAILURES",
    "RESET_TOKEN_EXPIRES_MIN", "CORS_ORIGINS", "MAIL_FROM", "MAIL_SERVER", "MAIL_PORT",
    "MAIL_USERNAME", "MAIL_PASSWORD", "MAIL_TLS", "MAIL_OUTBOX_DIR",
    "RATE_LIMIT_AUTH_PER_MIN", "RATE_LIMIT_GLOBAL_PER_MIN", "PASSWORD_MIN_LENGTH", "RUST_LOG",
    "DATA_DIR", "HTTP_BODY_TIMEOUT", "HTTP_HEADER_TIMEOUT", "LOGIN_FAILURE_WINDOW",
    "LOGIN_LOCKOUT", "LOGIN_LOCKOUT_MAX", "METRICS_ADDR", "REFRESH_REUSE_GRACE",
    "REQUIRE_VERIFIED_EMAIL", "SESSION_IDLE_TIMEOUT", "SESSION_MAX_LIFETIME", "TRUSTED_PROXIES",
    "VERIFICATION_TOKEN_EXPIRES", "SQLITE_SYNCHRONOUS", "RATE_LIMIT_BACKEND",
    "JWT_ACCESS_ALGORITHM", "REFRESH_COOKIE_SAMESITE", "REGISTRATION", "ROLES", "DEFAULT_ROLE",
    "MFA_REQUIRED_ROLES", "MFA_REQUIRED_FOR_ALL", "MFA_ENCRYPTION_KEY",
]

# --env KEY=VALUE: service settings every server of the run gets on top of
# the bench's own (e.g. SQLITE_SYNCHRONOUS=normal to measure what it costs).
EXTRA_ENV: dict[str, str] = {}

# Processes started here, stopped by cleanup() whatever happens.
_children: list[subprocess.Popen] = []
# Data directories of stopped servers, removed together at the end.
_dirs: list[Path] = []


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------- process control


def _stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    try:
        # Each child runs in its own session: signal exactly that group.
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=5)


def cleanup() -> None:
    while _children:
        _stop(_children.pop())
    while _dirs:
        shutil.rmtree(_dirs.pop(), ignore_errors=True)


def _on_signal(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def handle_signals() -> None:
    # Explicitly, also for SIGINT: a shell starting us in the background
    # leaves SIGINT ignored, and Python then installs no handler of its own.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)


def spawn(cmd: list[str], **kw) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, start_new_session=True, **kw)
    _children.append(proc)
    return proc


def forget(proc: subprocess.Popen) -> None:
    if proc in _children:
        _children.remove(proc)


# ----------------------------------------------------------------- machine facts


def read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def machine_info() -> dict:
    cpuinfo = read("/proc/cpuinfo")
    model = next((l.split(":", 1)[1].strip() for l in cpuinfo.splitlines()
                  if l.startswith("model name")), "unknown")
    mem_kib = next((int(l.split()[1]) for l in read("/proc/meminfo").splitlines()
                    if l.startswith("MemTotal:")), 0)

    def out(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30,
                                  cwd=REPO).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    wrk_version = ""
    if shutil.which("wrk"):
        r = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
        wrk_version = (r.stdout + r.stderr).splitlines()[0].strip() if (r.stdout + r.stderr) else ""
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "mem_total_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": os.uname().release,
        "rustc": out(["rustc", "--version"]),
        "wrk": wrk_version,
        "git_commit": out(["git", "rev-parse", "--short", "HEAD"]),
        "git_dirty": bool(out(["git", "status", "--porcelain", "--untracked-files=no"])),
    }


def loadavg() -> list[float]:
    return [float(x) for x in read("/proc/loadavg").split()[:3]]


# ----------------------------------------------------------------- build and baseline


def target_dir() -> Path:
    t = os.environ.get("CARGO_TARGET_DIR")
    if not t:
        return REPO / "target"
    p = Path(t)
    return p if p.is_absolute() else REPO / p


DATA_ROOT = Path("/var/tmp/clinic-auth-bench")
# linux/fs.h: the inode flags ioctls and the Orlov "top directory" flag.
FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, FS_TOPDIR_FL = 0x80086601, 0x40086602, 0x00020000


def data_root() -> Path:
    """Where the servers' data directories go (--data-root).

    On a journal-less ext4 like this machine's, a file created within
    minutes of many deletions in the same block group costs 0.3-0.6 ms of
    kernel CPU (ext4 skips each recently deleted inode) against ~0.06 ms
    otherwise; test runs, cargo and the bench's own clean-up make such
    deletions all the time. Every registration writes an outbox email, so
    that would be the cost of this machine's churn, not of the service. The
    root is therefore marked a "top directory" (chattr +T): ext4 then puts
    each new data directory in a block group of its own choosing, as it
    does for top-level directories, instead of next to its parent's
    churn (measured in BENCHMARKS.md). Best effort: other filesystems
    refuse the flag, and lose nothing by it."""
    DATA_ROOT.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(DATA_ROOT, os.O_RDONLY | os.O_DIRECTORY)
        try:
            flags = array.array("l", [0])
            fcntl.ioctl(fd, FS_IOC_GETFLAGS, flags, True)
            if not flags[0] & FS_TOPDIR_FL:
                flags[0] |= FS_TOPDIR_FL
                fcntl.ioctl(fd, FS_IOC_SETFLAGS, flags, True)
        finally:
            os.close(fd)
    except OSError:
        pass
    return DATA_ROOT


def build() -> Path:
    log("building the release binary (cargo build --release)")
    subprocess.run(["cargo", "build", "--release", "--bin", "clinic-auth"], cwd=REPO, check=True)
    # The baseline too: built now, it would compile in the middle of the
    # first scenario that needs it.
    subprocess.run(["cargo", "bench", "--bench", "argon2_baseline", "--no-run"], cwd=REPO,
                   check=True)
    binary = target_dir() / "release" / "clinic-auth"
    if not binary.exists():
        raise SystemExit(f"release binary not found at {binary}")
    return binary


_baseline_exe: str | None = None


def baseline_exe() -> str:
    """The built argon2_baseline executable, built once per bench run: later
    runs exec it directly, so no cargo start-up (or a stray rebuild of an
    edited tree) sits between a baseline run and the round next to it."""
    global _baseline_exe
    if _baseline_exe is None:
        r = subprocess.run(["cargo", "bench", "--bench", "argon2_baseline", "--no-run",
                            "--message-format=json"], cwd=REPO, stdout=subprocess.PIPE,
                           text=True, timeout=3600)
        if r.returncode != 0:
            raise SystemExit("cargo bench --bench argon2_baseline --no-run failed")
        for line in r.stdout.splitlines():
            msg = json.loads(line) if line.startswith("{") else {}
            if msg.get("reason") == "compiler-artifact" and msg.get("executable") \
                    and msg.get("target", {}).get("name") == "argon2_baseline":
                _baseline_exe = msg["executable"]
        if _baseline_exe is None:
            raise SystemExit("cargo did not name the argon2_baseline executable")
    return _baseline_exe


def argon2_baseline(seconds: float) -> dict:
    exe = baseline_exe()
    log(f"argon2id baseline ({Path(exe).name}, {seconds:g} s)")
    env = dict(os.environ, ARGON2_BASELINE_SECS=str(seconds))
    # `--bench` is what cargo passes to a harness-less bench target.
    r = subprocess.run([exe, "--bench"], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True,
                       timeout=max(60, 10 * seconds))
    if r.returncode != 0:
        raise SystemExit(f"{exe} failed ({r.returncode})")
    for line in r.stdout.splitlines():
        if line.startswith("ARGON2_BASELINE "):
            result = json.loads(line.split(" ", 1)[1])
            log(f"argon2id baseline: {result['hashes_per_sec']:.1f} hashes/s "
                f"on {result['threads']} threads")
            return result
    raise SystemExit("argon2_baseline printed no ARGON2_BASELINE line")


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    log("wrk not found: installing it from Debian (apt-get install -y wrk)")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(sudo + ["apt-get", "install", "-y", "wrk"], env=env).returncode != 0:
        subprocess.run(sudo + ["apt-get", "update"], env=env, check=True)
        subprocess.run(sudo + ["apt-get", "install", "-y", "wrk"], env=env, check=True)
    path = shutil.which("wrk")
    if not path:
        raise SystemExit("wrk is still missing after apt-get install")
    return path


# ----------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def health_ok(port: int, timeout: float = 1.0) -> bool:
    """One GET /health over a fresh connection; False while not listening."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(f"GET /health HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
                      "Connection: close\r\n\r\n".encode())
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            return data.startswith(b"HTTP/1.1 200")
    except OSError:
        return False


class Server:
    """The release binary on a fresh data directory, cwd inside it."""

    def __init__(self, binary: Path, rust_log: str | None, keep: bool,
                 wrapper: list[str] | None = None):
        self.binary = binary
        self.wrapper = wrapper or []
        self.dir = Path(tempfile.mkdtemp(prefix="server-", dir=data_root()))
        self.port = free_port()
        self.keep = keep
        self.env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARS}
        self.env.update({
            "HOST": HOST,
            "PORT": str(self.port),
            "APP_ENV": "development",
            "APP_URL": f"http://{HOST}:{self.port}",
            "DATABASE_URL": f"sqlite://{self.dir}/bench.db",
            "MAIL_OUTBOX_DIR": str(self.dir / "outbox"),
            "JWT_ACCESS_SECRET": "bench-access-" + uuid.uuid4().hex + uuid.uuid4().hex,
            "JWT_REFRESH_SECRET": "bench-refresh-" + uuid.uuid4().hex + uuid.uuid4().hex,
            "JWT_ACCESS_EXPIRES": "1h",
            # Must outlast the access token (the service checks).
            "REFRESH_IDLE_TIMEOUT": "2h",
            # login_fail floods one email with wrong passwords: measured is
            # what a failure costs, not the lockout's cheap 429 after five.
            "LOGIN_MAX_FAILURES": "1000000000",
            "RATE_LIMIT_AUTH_PER_MIN": "100000000",
            "RATE_LIMIT_GLOBAL_PER_MIN": "100000000",
        })
        if rust_log:
            self.env["RUST_LOG"] = rust_log
        self.env.update(EXTRA_ENV)
        self.proc: subprocess.Popen | None = None
        self.startup_ms = float("nan")
        self.idle_rss_mib = float("nan")

    def start(self, limit_s: float = 30.0) -> None:
        logf = open(self.dir / "server.log", "wb")
        t0 = time.perf_counter()
        self.proc = spawn(self.wrapper + [str(self.binary)], cwd=self.dir, env=self.env,
                          stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
        logf.close()
        # Poll /health every 2 ms from the moment of exec.
        while True:
            if health_ok(self.port, timeout=0.5):
                self.startup_ms = (time.perf_counter() - t0) * 1000
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.perf_counter() - t0 > limit_s:
                raise RuntimeError(f"server not healthy after {limit_s} s:\n{self.log_tail()}")
            time.sleep(0.002)
        time.sleep(0.3)  # let start-up work settle before reading the idle RSS
        self.idle_rss_mib = self.status_kib("VmRSS") / 1024

    def log_tail(self, n: int = 20) -> str:
        return "\n".join(read(str(self.dir / "server.log")).splitlines()[-n:])

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_times(self) -> tuple[float, float]:
        """(utime, stime) of the whole process (all threads), in seconds."""
        stat = read(f"/proc/{self.proc.pid}/stat")
        fields = stat.rsplit(")", 1)[1].split()
        # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
        tick = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / tick, int(fields[12]) / tick

    def hash_cpu(self) -> float:
        """CPU seconds of the password-hashing threads (named argon2-N; they
        live as long as the server). The process total minus this is what
        a route costs besides its hash: a figure the machine's drift barely
        moves, unlike throughput."""
        total = 0.0
        tick = os.sysconf("SC_CLK_TCK")
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            stat = read(str(task / "stat"))
            if "(argon2-" not in stat:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        return total

    def log_size(self) -> int:
        return (self.dir / "server.log").stat().st_size

    def steady_rate(self, since: int, path: str, status: int, start: float,
                    end: float) -> tuple[float, int] | None:
        """Answers per second in steady state: from the service's request
        log (written from byte `since` on), the answers to `path` with
        `status` completed between the wall-clock times `start` and `end`,
        as (n - 1) / (last - first). None without request lines (a quieter
        RUST_LOG) or with fewer than 20 answers in the window."""
        with open(self.dir / "server.log", "rb") as f:
            f.seek(since)
            text = f.read().decode("utf-8", "replace")
        times = []
        for m in REQUEST_LINE.finditer(text):
            if m["path"] != path or int(m["status"]) != status:
                continue
            t = dt.datetime.fromisoformat(m["time"]).timestamp()
            if start <= t <= end:
                times.append(t)
        if len(times) < 20 or times[-1] <= times[0]:
            return None
        return (len(times) - 1) / (times[-1] - times[0]), len(times)

    def status_kib(self, key: str) -> int:
        for line in read(f"/proc/{self.proc.pid}/status").splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        return 0

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            forget(self.proc)
            if self.proc.returncode not in (0, -signal.SIGTERM):
                log(f"server exited with {self.proc.returncode}; log tail:\n{self.log_tail()}")
        if not self.keep:
            # Removed by cleanup() at the end of the run, not now: deleting
            # one scenario's thousands of outbox emails would slow the next
            # scenario's file creation (see data_root).
            _dirs.append(self.dir)
        else:
            log(f"kept server directory {self.dir}")

    # --- set-up requests (plain http.client, loopback) ---

    def call(self, method: str, path: str, body: dict | None = None,
             headers: dict | None = None) -> tuple[int, dict, str | None]:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=60)
        try:
            hdrs = dict(headers or {})
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                hdrs["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            payload = resp.read()
            cookie = None
            for name, value in resp.getheaders():
                if name.lower() == "set-cookie":
                    m = re.match(r"refresh_token=([^;]*)", value)
                    if m:
                        cookie = m.group(1)
            return resp.status, json.loads(payload) if payload else {}, cookie
        finally:
            conn.close()

    def register(self, email: str) -> None:
        status, body, _ = self.call("POST", "/api/auth/register",
                                    {"name": "Bench User", "email": email, "password": PASSWORD})
        if status != 201:
            raise RuntimeError(f"register {email}: {status} {body}")

    def login(self, email: str) -> tuple[str, str]:
        status, body, cookie = self.call("POST", "/api/auth/login",
                                         {"email": email, "password": PASSWORD})
        if status != 200 or not cookie:
            raise RuntimeError(f"login {email}: {status} {body}")
        return body["access_token"], cookie

    def logins(self, email: str, n: int) -> list[str]:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            return [c for _, c in pool.map(lambda _: self.login(email), range(n))]


# ----------------------------------------------------------------- wrk


# The service's access-log line for each answer, written as it completes:
# `<RFC 3339 time>  INFO request request_id=… method=POST path=/api/… status=201 …`.
REQUEST_LINE = re.compile(
    r"^(?P<time>\S+)\s+INFO\s+request\s.*?\bpath=(?P<path>\S+) status=(?P<status>\d+)",
    re.M)

# A round's steady state, for its ratio to argon2id: from this long after
# wrk starts (connections open, the hash queue fills) to this long before it
# stops (hashes in flight when wrk closes its connections finish for nobody).
STEADY_FROM_S = 0.25
STEADY_UNTIL_S = 0.10


class Wrk:
    """One wrk process; its Lua done() writes a JSON summary to a file."""

    def __init__(self, server: Server, path: str, script: str, connections: int,
                 threads: int, duration: int, timeout_s: int, env: dict | None = None):
        self.out = server.dir / f"wrk-{uuid.uuid4().hex[:8]}.json"
        self.duration = duration
        self.timeout_s = timeout_s
        e = dict(os.environ, BENCH_OUT=str(self.out), BENCH_LUA_DIR=str(LUA_DIR))
        e.update(env or {})
        threads = max(1, min(threads, connections))
        self.cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s",
                    f"--timeout={timeout_s}s", "-s", str(LUA_DIR / script),
                    f"http://{HOST}:{server.port}{path}"]
        self.proc = spawn(self.cmd, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)

    def result(self) -> dict:
        try:
            text, _ = self.proc.communicate(timeout=self.duration + self.timeout_s + 60)
        except subprocess.TimeoutExpired:
            _stop(self.proc)
            forget(self.proc)
            raise RuntimeError(f"wrk overran its time bound: {' '.join(self.cmd)}")
        # On any other exception (Ctrl-C) it stays listed for cleanup().
        forget(self.proc)
        if self.proc.returncode != 0 or not self.out.exists():
            raise RuntimeError(f"wrk failed ({self.proc.returncode}): {' '.join(self.cmd)}\n{text}")
        r = json.loads(self.out.read_text())
        r["statuses"] = {int(k): v for k, v in r["statuses"].items()}
        return r


def run_wrk(server: Server, path: str, script: str, connections: int, threads: int,
            duration: int, timeout_s: int, env: dict | None = None) -> dict:
    return Wrk(server, path, script, connections, threads, duration, timeout_s, env).result()


def merge_wrk(results: list[dict]) -> dict:
    """One summary of consecutive wrk runs: counts add up; latency shows the
    median of the runs' p50s and the worst p99 and max."""
    if len(results) == 1:
        return results[0]
    lat = [r["latency_us"] for r in results]
    statuses: dict[int, int] = {}
    for r in results:
        for s, n in r["statuses"].items():
            statuses[s] = statuses.get(s, 0) + n
    return {
        "duration_us": sum(r["duration_us"] for r in results),
        "requests": sum(r["requests"] for r in results),
        "statuses": statuses,
        "errors": {k: sum(r["errors"][k] for r in results) for k in results[0]["errors"]},
        "latency_us": {
            "p50": statistics.median(x["p50"] or 0 for x in lat),
            "p99": max(x["p99"] or 0 for x in lat),
            "max": max(x["max"] or 0 for x in lat),
        },
    }


def ok_count(r: dict, expected: int) -> int:
    return r["statuses"].get(expected, 0)


def cpu_delta(before: tuple[float, float], after: tuple[float, float]) -> tuple[float, float]:
    return after[0] - before[0], after[1] - before[1]


def summarise(name: str, r: dict, expected: int, connections: int, server: Server,
              cpu: tuple[float, float] | None, window_s: float) -> dict:
    cpu_s = sum(cpu) if cpu is not None else None
    secs = r["duration_us"] / 1e6
    statuses = r["statuses"]
    by_design = sum(n for s, n in statuses.items() if s in BY_DESIGN)
    unexpected = {s: n for s, n in statuses.items() if s != expected and s not in BY_DESIGN}
    sock = r["errors"]
    socket_errors = sock["connect"] + sock["read"] + sock["write"] + sock["timeout"]
    ok = ok_count(r, expected)
    lat = r["latency_us"]
    row = {
        "scenario": name,
        "connections": connections,
        "expected_status": expected,
        "seconds": round(secs, 3),
        "requests": r["requests"],
        "ok": ok,
        # Throughput counts answers with the expected status only.
        "rps": ok / secs if secs else 0.0,
        "p50_ms": (lat["p50"] or 0) / 1000,
        "p99_ms": (lat["p99"] or 0) / 1000,
        "max_ms": (lat["max"] or 0) / 1000,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": sum(unexpected.values()) + socket_errors,
        "errors_by_status": {str(k): v for k, v in sorted(unexpected.items())},
        "socket_errors": {k: sock[k] for k in ("connect", "read", "write", "timeout")},
        "by_design": by_design,
        "server_cpu_s": cpu_s,
        "server_user_s": cpu[0] if cpu is not None else None,
        "server_sys_s": cpu[1] if cpu is not None else None,
        "cpu_ms_per_req": (cpu_s * 1000 / r["requests"]) if (cpu_s is not None and r["requests"]) else None,
        "cpu_cores": (cpu_s / window_s) if (cpu_s is not None and window_s) else None,
        "idle_rss_mib": server.idle_rss_mib,
        "peak_rss_mib": server.status_kib("VmHWM") / 1024,
        "startup_ms": server.startup_ms,
    }
    return row


# ----------------------------------------------------------------- scenarios


class Bench:
    def __init__(self, args, binary: Path):
        self.a = args
        self.binary = binary
        self.rows: list[dict] = []
        self.starts: list[dict] = []
        self.run_id = uuid.uuid4().hex[:8]
        self.failures: list[dict] = []
        self.baselines: list[dict] = []  # every argon2id baseline run, in order
        self.scale: dict | None = None  # what the scale scenario loaded and measured

    def baseline(self) -> dict:
        b = argon2_baseline(self.a.baseline_secs)
        self.baselines.append(b)
        return b

    def server(self) -> Server:
        s = Server(self.binary, self.a.rust_log, self.a.keep)
        s.start()
        self.starts.append({"startup_ms": s.startup_ms, "idle_rss_mib": s.idle_rss_mib})
        log(f"  server up on {HOST}:{s.port} in {s.startup_ms:.1f} ms, idle RSS {s.idle_rss_mib:.1f} MiB")
        return s

    def health_run(self, server: Server, seconds: int) -> float:
        """`health` answers/s on `server` now: the reference of a round of
        `me` or `refresh`, taken on the same server right around it."""
        r = run_wrk(server, "/health", "get.lua", self.a.connections, 2, seconds, 10)
        return ok_count(r, 200) / (r["duration_us"] / 1e6)

    def measured(self, name: str, server: Server, path: str, script: str, connections: int,
                 threads: int, expected: int, env_warm: dict | None = None,
                 env_run: dict | None = None, timeout_s: int = 10,
                 env_rounds: list[dict] | None = None, like: str | None = None) -> dict:
        """`env_rounds`, when given, holds one wrk environment per round (a
        scenario whose requests consume what the environment names). `like`
        names the scenario whose rounds and ratio this one takes (the scale
        scenario's `me` is measured like `me`)."""
        a = self.a
        kind = like or name
        if a.warmup > 0:
            run_wrk(server, path, script, connections, threads, a.warmup, timeout_s,
                    env_warm if env_warm is not None else env_run)
        if not server.alive():
            raise RuntimeError(f"{name}: server died during warm-up:\n{server.log_tail()}")
        bracketed = kind in ROUNDS and not a.no_baseline
        against_health = kind in HEALTH_ROUNDS and a.rounds > 1
        rounds = a.hash_rounds if bracketed else a.rounds if against_health else 1
        # Every round is as long as one of --rounds rounds in --duration.
        seconds = a.duration if rounds == 1 else max(1, round(a.duration / a.rounds))
        # Hashing-bound routes: the measured time is cut into rounds, with an
        # argon2id baseline run before, between and after them; each round
        # is compared with the two runs around it. `me` and `refresh` do the
        # same with `health` runs on their own server: measured a minute
        # apart, the two rates met different moments of a shared machine.
        baselines = [self.baseline()] if bracketed else []
        health_runs = [self.health_run(server, seconds)] if against_health else []
        results, hash_s, cpu, window = [], 0.0, (0.0, 0.0), 0.0
        steady: list[tuple[float, int] | None] = []
        for i in range(rounds):
            env = dict(env_rounds[i] if env_rounds else env_run or {})
            if rounds > 1 and "BENCH_PREFIX" in env:
                env["BENCH_PREFIX"] += f"-{i}"  # unique emails in every round
            since, wall = server.log_size(), time.time()
            cpu0, h0, t0 = server.cpu_times(), server.hash_cpu(), time.perf_counter()
            results.append(run_wrk(server, path, script, connections, threads, seconds,
                                   timeout_s, env))
            cpu1, h1, t1 = server.cpu_times(), server.hash_cpu(), time.perf_counter()
            if bracketed:
                steady.append(server.steady_rate(since, path, expected, wall + STEADY_FROM_S,
                                                 wall + seconds - STEADY_UNTIL_S))
            d = cpu_delta(cpu0, cpu1)
            cpu, hash_s, window = (cpu[0] + d[0], cpu[1] + d[1]), hash_s + h1 - h0, window + t1 - t0
            if bracketed:
                baselines.append(self.baseline())
            if against_health:
                health_runs.append(self.health_run(server, seconds))
        row = summarise(name, merge_wrk(results), expected, connections, server, cpu, window)
        row["like"] = kind
        if any(int(status) >= 500 for status in row.get("errors_by_status", {})):
            # A 5xx is a defect to chase, and the data directory (with its
            # log) is removed at the end of the run unless --keep.
            kept = Path(a.out) / f"{name}-server.log"
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(server.dir / "server.log", kept)
            log(f"  {name}: server errors {row['errors_by_status']}; its log is kept at {kept}")
        if health_runs:
            row["health_runs"] = health_runs
            row["round_rps_wrk"] = [ok_count(r, expected) / (r["duration_us"] / 1e6)
                                    for r in results]
            row["round_ratios"] = [rps / statistics.mean(health_runs[i:i + 2])
                                   for i, rps in enumerate(row["round_rps_wrk"])]
        if row["requests"]:
            row["other_cpu_ms_per_req"] = (sum(cpu) - hash_s) * 1000 / row["requests"]
        if baselines:
            hps = [b["hashes_per_sec"] for b in baselines]
            row["baseline_runs"] = hps
            row["baseline_cpu_ms"] = [b["cpu_ms_per_hash"] for b in baselines
                                      if b.get("cpu_ms_per_hash")]
            # wrk's count over a round loses the hashes in flight at its end
            # (~0.5 % of a 2 s round); the baseline loses none. So each round
            # is judged on its steady-state rate from the service's request
            # log, and on wrk's count only when the log has no request lines.
            row["round_rps_wrk"] = [ok_count(r, expected) / (r["duration_us"] / 1e6)
                                    for r in results]
            row["round_rps_steady"] = [s[0] if s else None for s in steady]
            row["round_steady_answers"] = [s[1] if s else None for s in steady]
            row["round_ratios"] = [
                (s[0] if s else w) / statistics.mean(hps[i:i + 2])
                for i, (s, w) in enumerate(zip(steady, row["round_rps_wrk"]))]
        self.add(row)
        return row

    def add(self, row: dict) -> None:
        self.rows.append(row)
        log(f"  {row['scenario']}: {row['rps']:.1f} req/s, p50 {row['p50_ms']:.2f} ms, "
            f"p99 {row['p99_ms']:.2f} ms, errors {row['errors']} {row['errors_by_status'] or ''}"
            f"{' socket ' + str(row['socket_errors']) if any(row['socket_errors'].values()) else ''}, "
            f"by design {row['by_design']}, peak RSS {row['peak_rss_mib']:.1f} MiB")

    def run(self, name: str) -> None:
        log(f"scenario {name}")
        server = None
        try:
            server = self.server()
            getattr(self, "s_" + name)(server)
        except (RuntimeError, OSError, ValueError, KeyError, subprocess.SubprocessError) as e:
            # One broken scenario must not hide the others' numbers.
            log(f"  scenario {name} FAILED: {e}")
            self.failures.append({"scenario": name, "error": str(e)})
        finally:
            # Load generators first (after an interrupt some may still run):
            # the server's graceful shutdown waits for in-flight requests.
            for proc in list(_children):
                if server is None or proc is not server.proc:
                    _stop(proc)
                    forget(proc)
            if server is not None:
                server.stop()

    # --- each scenario gets a fresh server ---

    def s_health(self, s: Server) -> None:
        c = self.a.connections
        self.measured("health", s, "/health", "get.lua", c, 2, 200)

    def s_me(self, s: Server) -> None:
        email = f"me-{self.run_id}@bench.example"
        s.register(email)
        access, _ = s.login(email)
        c = self.a.connections
        self.measured("me", s, "/api/auth/me", "get.lua", c, 2, 200,
                      env_run={"BENCH_BEARER": access})

    def s_refresh(self, s: Server) -> None:
        email = f"refresh-{self.run_id}@bench.example"
        s.register(email)
        c = self.a.connections
        # One chain per connection, fresh tokens for the warm-up and for each
        # round (a chain's last token dies with its wrk process).
        runs = 1 + (self.a.rounds if self.a.rounds > 1 else 1)
        cookies = s.logins(email, runs * c)
        files = []
        for i in range(runs):
            f = s.dir / f"tokens-{i}.txt"
            f.write_text("\n".join(cookies[i * c:(i + 1) * c]) + "\n")
            files.append({"BENCH_TOKENS": str(f)})
        self.measured("refresh", s, "/api/auth/refresh", "refresh.lua", c, c, 200,
                      env_warm=files[0], env_run=files[1], env_rounds=files[1:])

    def _login(self, s: Server, name: str, password: str, expected: int, connections: int,
               timeout_s: int = 30) -> dict:
        email = f"{name}-{self.run_id}@bench.example"
        s.register(email)
        env = {"BENCH_EMAIL": email, "BENCH_PASSWORD": password}
        return self.measured(name, s, "/api/auth/login", "login.lua", connections, 2, expected,
                             env_run=env, timeout_s=timeout_s)

    def s_login(self, s: Server) -> None:
        self._login(s, "login", PASSWORD, 200, self.a.connections)

    def s_mfa_verify(self, s: Server) -> None:
        """POST /api/auth/mfa/verify: the second step of a sign-in, alone.

        A challenge (`mfa_token`) is single use and a code works once per
        user and 30-second step, and the release binary keeps real time, so
        wrk's endless repetition of one request cannot drive it. Instead
        --mfa-users users are enrolled (through the API: register, sign in,
        set up and confirm an authenticator, sign in again for a challenge:
        three argon2id runs each, not measured), then every challenge is
        answered once with the code its user's app shows, computed here
        (RFC 6238), over --connections keep-alive connections: throughput is
        answers / wall time of that burst, the latencies are per request."""
        users = self.a.mfa_users
        log(f"  enrolling {users} users with an authenticator (not measured)")
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            ready = list(pool.map(lambda i: enrolled_challenge(s, f"mfa-{self.run_id}-{i}@bench.example"),
                                  range(users)))
        before = s.cpu_times()
        t0 = time.monotonic()
        chunks = [ready[i::self.a.connections] for i in range(self.a.connections)]
        with concurrent.futures.ThreadPoolExecutor(self.a.connections) as pool:
            results = list(pool.map(lambda chunk: answer_challenges(s.port, chunk), chunks))
        wall = time.monotonic() - t0
        after = s.cpu_times()
        latencies = sorted(ms for lat, _ in results for ms in lat)
        statuses: dict[int, int] = {}
        for _, counts in results:
            for code, n in counts.items():
                statuses[code] = statuses.get(code, 0) + n

        def pct_us(q: float) -> float:
            return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e6

        r = {
            "duration_us": int(wall * 1e6),
            "requests": len(latencies),
            "errors": {"connect": 0, "read": 0, "write": 0, "timeout": 0, "status": 0},
            "latency_us": {"p50": pct_us(0.50), "p99": pct_us(0.99), "max": latencies[-1] * 1e6},
            "statuses": statuses,
        }
        self.add(summarise("mfa_verify", r, 200, self.a.connections, s,
                           cpu_delta(before, after), wall))

    def s_login_fail(self, s: Server) -> None:
        self._login(s, "login_fail", WRONG_PASSWORD, 401, self.a.connections)

    def s_register(self, s: Server) -> None:
        c = self.a.connections
        self.measured("register", s, "/api/auth/register", "register.lua", c, 2, 201,
                      env_warm={"BENCH_PREFIX": f"w{self.run_id}", "BENCH_PASSWORD": PASSWORD},
                      env_run={"BENCH_PREFIX": f"r{self.run_id}", "BENCH_PASSWORD": PASSWORD},
                      timeout_s=30)

    def s_flood(self, s: Server) -> None:
        self._login(s, "flood", PASSWORD, 200, self.a.flood_connections, timeout_s=60)

    def s_scale(self, s: Server) -> None:
        """me, refresh and login with --scale-users users and as many live
        sign-ins in the store (scripts/bench_scale.py)."""
        import bench_scale
        bench_scale.run(self, s, self.a.scale_users, log, PASSWORD)

    def s_mixed(self, s: Server) -> None:
        """Login flood at 64 connections; meanwhile two light probes measure
        the latency of /me and /health."""
        email = f"mixed-{self.run_id}@bench.example"
        s.register(email)
        env = {"BENCH_EMAIL": email, "BENCH_PASSWORD": PASSWORD}
        self._flood_with_probes(s, "mixed", "login", "/api/auth/login", "login.lua", 200, env, env)

    def s_strength(self, s: Server) -> None:
        """Registration flood at 64 connections with 128-character passwords,
        the costliest for the strength check; the same probes as `mixed`."""
        s.register(f"strength-{self.run_id}@bench.example")
        self._flood_with_probes(
            s, "strength", "register", "/api/auth/register", "register.lua", 201,
            {"BENCH_PREFIX": f"sw{self.run_id}", "BENCH_PASSWORD": LONG_PASSWORD},
            {"BENCH_PREFIX": f"sr{self.run_id}", "BENCH_PASSWORD": LONG_PASSWORD})

    def _flood_with_probes(self, s: Server, name: str, what: str, path: str, script: str,
                           expected: int, env_warm: dict, env_run: dict) -> None:
        """A flood of `path` at --mixed-connections while two light probes
        measure the latency of /me and /health (paced by wrk's delay(): they
        add little load of their own). The probes' account is the first one
        registered on `s`."""
        a = self.a
        access, _ = s.login(f"{name}-{self.run_id}@bench.example")
        c = a.mixed_connections
        if a.warmup > 0:
            run_wrk(s, path, script, c, 2, a.warmup, 60, env_warm)
        cpu0, t0 = s.cpu_times(), time.perf_counter()
        flood = Wrk(s, path, script, c, 2, a.duration + 1, 60, env_run)
        time.sleep(0.25)  # the flood's connections are open and queued first
        probe_env = {"BENCH_DELAY_MS": str(a.probe_delay_ms)}
        me = Wrk(s, "/api/auth/me", "get.lua", a.probe_connections, 1, a.duration, 10,
                 dict(probe_env, BENCH_BEARER=access))
        health = Wrk(s, "/health", "get.lua", a.probe_connections, 1, a.duration, 10, probe_env)
        r_me, r_health = me.result(), health.result()
        r_flood = flood.result()
        cpu1, t1 = s.cpu_times(), time.perf_counter()
        cpu = cpu_delta(cpu0, cpu1)
        self.add(summarise(f"{name}: {what} x{c}", r_flood, expected, c, s, cpu, t1 - t0))
        self.add(summarise(f"{name}: me probe", r_me, 200, a.probe_connections, s, None, 0))
        self.add(summarise(f"{name}: health probe", r_health, 200, a.probe_connections, s, None, 0))


def totp_code(key: str, step: int) -> str:
    """RFC 6238 (SHA-1, 6 digits) for time step `step`: the authenticator
    app's side, so the bench needs no client library."""
    import base64
    import hashlib
    import hmac
    raw = key.replace(" ", "").upper()
    secret = base64.b32decode(raw + "=" * (-len(raw) % 8))
    mac = hmac.new(secret, step.to_bytes(8, "big"), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = int.from_bytes(mac[offset:offset + 4], "big") & 0x7FFFFFFF
    return f"{value % 1_000_000:06d}"


def enrolled_challenge(s: Server, email: str) -> tuple[str, str, int]:
    """Registers `email`, turns its authenticator on and signs in with the
    password: (mfa_token, manual key, the confirming code's step)."""
    s.register(email)
    access, _ = s.login(email)
    bearer = {"Authorization": f"Bearer {access}"}
    status, body, _ = s.call("POST", "/api/auth/mfa/totp/setup", None, bearer)
    if status != 200:
        raise RuntimeError(f"totp setup {email}: {status} {body}")
    key = body["manual_entry_key"]
    step = int(time.time()) // 30
    status, body, _ = s.call("POST", "/api/auth/mfa/totp/confirm", {"code": totp_code(key, step)},
                             bearer)
    if status != 200:
        raise RuntimeError(f"totp confirm {email}: {status} {body}")
    status, body, _ = s.call("POST", "/api/auth/login", {"email": email, "password": PASSWORD})
    if status != 200 or not body.get("mfa_required"):
        raise RuntimeError(f"login {email}: {status} {body}")
    return body["mfa_token"], key, step


def answer_challenges(port: int, chunk: list) -> tuple[list[float], dict]:
    """Answers each challenge once, in turn, on one keep-alive connection;
    returns the latencies (seconds) and the status counts. The code is the
    one of now, or of the next step when now is the confirming code's step
    (already used; the service accepts one step of skew)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    latencies, counts = [], {}
    try:
        for token, key, confirmed_step in chunk:
            step = max(int(time.time()) // 30, confirmed_step + 1)
            body = json.dumps({"mfa_token": token, "method": "totp", "code": totp_code(key, step)})
            t = time.monotonic()
            conn.request("POST", "/api/auth/mfa/verify", body=body.encode(),
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            latencies.append(time.monotonic() - t)
            counts[resp.status] = counts.get(resp.status, 0) + 1
    finally:
        conn.close()
    return latencies, counts


# ----------------------------------------------------------------- profiling


def keepalive_requests(port: int, n: int, method: str, path: str, headers: dict,
                       follow=None, body=None) -> tuple[dict, dict]:
    """n sequential requests on one keep-alive connection. `follow(resp)`
    gives the headers of the next request (the refresh chain); `body()` the
    JSON body of each request. Returns the status counts and the headers for
    a next request."""
    conn = http.client.HTTPConnection(HOST, port, timeout=120)
    counts: dict[int, int] = {}
    try:
        for _ in range(n):
            data = json.dumps(body()).encode() if body else None
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            resp.read()
            counts[resp.status] = counts.get(resp.status, 0) + 1
            if follow:
                headers = follow(resp)
    finally:
        conn.close()
    return counts, headers


def next_refresh_cookie(resp) -> dict:
    for k, v in resp.getheaders():
        m = re.match(r"refresh_token=([^;]+)", v) if k.lower() == "set-cookie" else None
        if m:
            return {"Cookie": f"refresh_token={m.group(1)}"}
    raise RuntimeError(f"refresh chain broken: {resp.status}")


PROFILED = ("health", "me", "refresh", "login", "register")


def profile(a, binary: Path, names: list[str], out: Path) -> None:
    """Runs the release binary under callgrind and drives a small fixed load
    (one keep-alive connection, sequential requests) at one route. (login
    and register run argon2 ~50x slower under callgrind: use a small
    --profile-requests.) Counters
    run only from after set-up and are dumped right after the load, so the
    profile holds the requests only (the warm-up requests run uninstrumented). Writes callgrind-<scenario>.{out,txt} to out."""
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        raise SystemExit("--profile needs valgrind (apt-get install -y valgrind)")
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        if name not in PROFILED:
            raise SystemExit(f"--profile supports {', '.join(PROFILED)}; not {name}")
        raw = out / f"callgrind-{name}.out"
        for old in out.glob(f"callgrind-{name}.out*"):
            old.unlink()
        # Instrumentation starts off (fast start-up and set-up) and is
        # switched on for the measured requests only.
        wrapper = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={raw}",
                   "--instr-atstart=no", "--dump-instr=no", "--separate-threads=no"]
        s = Server(binary, a.rust_log, a.keep, wrapper)
        log(f"profile {name}: starting the server under callgrind")
        try:
            s.start(limit_s=300)
            email = f"profile-{name}@bench.example"
            n = a.profile_requests
            method, path, headers, follow, body = "GET", "/health", {}, None, None
            if name == "me":
                s.register(email)
                access, _ = s.login(email)
                path, headers = "/api/auth/me", {"Authorization": f"Bearer {access}"}
            elif name == "refresh":
                s.register(email)
                _, cookie = s.login(email)
                method, path, follow = "POST", "/api/auth/refresh", next_refresh_cookie
                headers = {"Cookie": f"refresh_token={cookie}"}
            elif name == "login":
                s.register(email)
                method, path = "POST", "/api/auth/login"
                headers = {"Content-Type": "application/json"}
                body = lambda: {"email": email, "password": PASSWORD}  # noqa: E731
            elif name == "register":
                # A unique email per request, as in the register scenario.
                method, path = "POST", "/api/auth/register"
                headers = {"Content-Type": "application/json"}
                body = lambda: {"name": "Bench User", "password": PASSWORD,  # noqa: E731
                                "email": f"p-{uuid.uuid4().hex}@bench.example"}
            # Warm the route (the chain goes on), then profile only the load.
            _, headers = keepalive_requests(s.port, min(n, 50), method, path, headers, follow,
                                            body)
            # vgdb names its FIFOs after $HOST, which the service's config
            # also uses: callgrind_control must see the server's value.
            ctl_env = dict(os.environ, HOST=s.env["HOST"])
            ctl = subprocess.run(["callgrind_control", "--instr=on", str(s.proc.pid)], env=ctl_env,
                                 capture_output=True, text=True, timeout=120)
            if "OK" not in ctl.stdout or "error" in ctl.stderr:
                raise RuntimeError(f"callgrind_control --instr=on failed: {ctl.stdout}{ctl.stderr}")
            t0 = time.perf_counter()
            counts, _ = keepalive_requests(s.port, n, method, path, headers, follow, body)
            took = time.perf_counter() - t0
            ctl = subprocess.run(["callgrind_control", "--dump", str(s.proc.pid)], env=ctl_env,
                                 capture_output=True, text=True, timeout=300)
            if "OK" not in ctl.stdout or "error" in ctl.stderr:
                raise RuntimeError(f"callgrind_control --dump failed: {ctl.stdout}{ctl.stderr}")
            log(f"profile {name}: {n} requests under callgrind in {took:.1f} s, statuses {counts}")
        finally:
            s.stop()
        dumps = sorted(out.glob(f"callgrind-{name}.out*"), key=lambda p: p.stat().st_mtime)
        # The explicit --dump is the one holding the measured requests (the
        # exit dump after it holds only the shutdown).
        dump = next((d for d in dumps if d != raw), dumps[0] if dumps else None)
        if dump is None:
            raise SystemExit(f"callgrind wrote no profile for {name}")
        report = []
        for inclusive in ("yes", "no"):
            r = subprocess.run(["callgrind_annotate", f"--inclusive={inclusive}", "--threshold=100",
                                str(dump)], capture_output=True, text=True, timeout=600)
            report.append(f"===== inclusive={inclusive} ({n} requests of {name}) =====\n"
                          + "\n".join(r.stdout.splitlines()[:120]))
        txt = out / f"callgrind-{name}.txt"
        txt.write_text("\n\n".join(report) + "\n")
        log(f"profile {name}: {dump} and {txt}")


# ----------------------------------------------------------------- report


def row_of(rows: list[dict], name: str) -> dict | None:
    return next((r for r in rows if r["scenario"] == name), None)


def baseline_of(row: dict | None, overall: float | None) -> float | None:
    """The argon2id rate a hashing-bound row is measured against: the mean
    of the baseline runs that bracket it, else the run's overall mean."""
    if row and row.get("baseline_runs"):
        return statistics.mean(row["baseline_runs"])
    return overall


def health_ratio(row: dict | None, health: dict | None) -> float | None:
    """`me` or `refresh` over `health`: the median of its rounds' ratios to
    the `health` runs around them when it ran in rounds, else its rate over
    the `health` scenario's."""
    if not row:
        return None
    if row.get("round_ratios"):
        return statistics.median(row["round_ratios"])
    return row["rps"] / health["rps"] if health and health["rps"] else None


def argon2_ratio(row: dict | None, overall: float | None) -> float | None:
    """A hashing-bound row's throughput over the argon2id rate: the median
    of its rounds' ratios when it ran in rounds, else against baseline_of."""
    if not row:
        return None
    if row.get("round_ratios"):
        return statistics.median(row["round_ratios"])
    ref = baseline_of(row, overall)
    return row["rps"] / ref if ref else None


def ratios(rows: list[dict], baseline_hps: float | None, baseline_cpu_ms: float | None) -> None:
    health = row_of(rows, "health")
    for r in rows:
        n = r.get("like", r["scenario"])
        ratio, label = None, None
        if n == "health" and health["rps"]:
            ratio, label = 1.0, "x health"
        elif n in HEALTH_ROUNDS:
            ratio, label = health_ratio(r, health), "x health"
        elif n in HASHING_BOUND or n.startswith("mixed: login"):
            ratio, label = argon2_ratio(r, baseline_hps), "x argon2"
        if ratio is not None:
            r["ratio"] = ratio
            r["ratio_of"] = label
        # Noise-resistant companion of "x argon2": raw CPU per hash divided by
        # the server's CPU per request (1.0 = the route costs one bare hash).
        cpu_ref = statistics.mean(r["baseline_cpu_ms"]) if r.get("baseline_cpu_ms") else baseline_cpu_ms
        if label == "x argon2" and cpu_ref and r.get("cpu_ms_per_req"):
            r["cpu_ratio"] = cpu_ref / r["cpu_ms_per_req"]


def status_list(counts: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in counts.items() if v)


def budgets(rows: list[dict], starts: list[dict], baseline_hps: float | None,
            tolerance: float, scale: dict | None = None) -> list[dict]:
    out = []

    def line(name: str, value, limit, passed, shown: str) -> None:
        out.append({"budget": name, "value": value, "limit": limit,
                    "result": "SKIP" if passed is None else ("PASS" if passed else "FAIL"),
                    "detail": shown})

    g = lambda n: row_of(rows, n)
    health, me, refresh = g("health"), g("me"), g("refresh")
    login, register, login_fail, flood = g("login"), g("register"), g("login_fail"), g("flood")
    me_probe, health_probe = g("mixed: me probe"), g("mixed: health probe")

    def rel(name, row, limit):
        v = health_ratio(row, health)
        if v is None:
            line(name, None, limit, None, "not measured")
            return
        rounds = row.get("round_ratios")
        how = (f"median of {len(rounds)} rounds ({', '.join(f'{x:.0%}' for x in rounds)}), "
               f"each round's req/s against the `health` runs around it on the same server"
               if rounds else f"{row['rps']:.0f} / {health['rps']:.0f} health req/s")
        line(name, round(v, 3), limit, v >= limit, f"{v:.0%}: {how} (need >= {limit:.0%})")

    def hashing(name, row, limit):
        v = argon2_ratio(row, baseline_hps)
        if v is None:
            line(name, None, limit, None, "not measured")
            return
        rounds = row.get("round_ratios")
        steady = "steady-state " if any(row.get("round_rps_steady") or []) else ""
        how = (f"median of {len(rounds)} rounds ({', '.join(f'{x:.1%}' for x in rounds)}), "
               f"each round's {steady}rate against the baseline runs around it" if rounds else
               f"{row['rps']:.0f} / {baseline_of(row, baseline_hps):.0f} hashes/s")
        line(name, round(v, 3), limit, v >= limit, f"{v:.1%}: {how} (need >= {limit:.0%})")

    rel("me >= 50% of health req/s", me, 0.50)
    rel("refresh >= 25% of health req/s", refresh, 0.25)
    hashing("login >= 90% of raw argon2id hashes/s", login, 0.90)
    hashing("register >= 90% of raw argon2id hashes/s", register, 0.90)

    def p99(name, row, limit_ms):
        if row:
            v = row["p99_ms"]
            line(name, round(v, 2), limit_ms, v <= limit_ms and row["ok"] > 0,
                 f"p99 {v:.2f} ms over {row['ok']} requests (need <= {limit_ms} ms)")
        else:
            line(name, None, limit_ms, None, "not measured")

    p99("me p99 <= 25 ms during the 64-conn login flood", me_probe, 25)
    p99("health p99 <= 10 ms during the 64-conn login flood", health_probe, 10)
    # Not in the table, the same promise: the strength check of a
    # new password is as heavy as a hash and must not block the workers.
    p99("me p99 <= 25 ms during the 64-conn flood of 128-char registrations",
        g("strength: me probe"), 25)
    p99("health p99 <= 10 ms during the 64-conn flood of 128-char registrations",
        g("strength: health probe"), 10)

    if flood:
        v = flood["peak_rss_mib"]
        line("flood (256 conns): peak RSS <= 128 MiB", round(v, 1), 128, v <= 128,
             f"VmHWM {v:.1f} MiB")
        bad = flood["errors"]
        line("flood (256 conns): no failures but 429/503", bad, 0, bad == 0,
             f"{bad} unexpected (by status: {status_list(flood['errors_by_status']) or 'none'}; "
             f"socket errors: {status_list(flood['socket_errors']) or 'none'}), "
             f"{flood['by_design']} by design (429/503)")
    else:
        line("flood (256 conns): peak RSS <= 128 MiB", None, 128, None, "not measured")
        line("flood (256 conns): no failures but 429/503", None, 0, None, "not measured")

    if starts:
        idle = max(s["idle_rss_mib"] for s in starts)
        line("idle RSS after start <= 20 MiB", round(idle, 1), 20, idle <= 20,
             f"max {idle:.1f} MiB over {len(starts)} starts")
        ms = sorted(s["startup_ms"] for s in starts)
        med = statistics.median(ms)
        line("exec to healthy <= 150 ms", round(med, 1), 150, med <= 150,
             f"median {med:.1f} ms (min {ms[0]:.1f}, max {ms[-1]:.1f}) over {len(ms)} starts")

    # A clinic group's worth of data (the scale scenario) must not slow the
    # hot routes by more than 15 %: each ratio (to health, or to argon2id)
    # against the same ratio on the empty database.
    for what, empty, full, ratio_of in (
            ("me", me, g("scale: me"), lambda r: health_ratio(r, health)),
            ("refresh", refresh, g("scale: refresh"), lambda r: health_ratio(r, health)),
            ("login", login, g("scale: login"), lambda r: argon2_ratio(r, baseline_hps))):
        name = f"scale: {what} >= 85% of the empty database's"
        e, f = ratio_of(empty), ratio_of(full)
        if e and f:
            v = f / e
            line(name, round(v, 3), 0.85, v >= 0.85,
                 f"{v:.0%}: {f:.1%} vs {e:.1%} ({'x health' if what != 'login' else 'x argon2id'})")
        else:
            line(name, None, 0.85, None, "not measured (needs both scenarios)")
    if scale:
        line("scale: exec to healthy <= 1 s", scale["startup_ms"], 1000,
             scale["startup_ms"] <= 1000,
             f"{scale['startup_ms']:.1f} ms with {scale['users']} users and as many sign-ins "
             f"({scale['db_bytes'] / 2**20:.0f} MiB, {scale['db_bytes_per_user']} bytes per user)")
    else:
        line("scale: exec to healthy <= 1 s", None, 1000, None, "not measured")

    fail_ratio, ok_ratio = argon2_ratio(login_fail, baseline_hps), argon2_ratio(login, baseline_hps)
    if login and login_fail and login["rps"] > 0:
        # Each against the argon2id runs around it when there are some: the
        # two scenarios run a minute apart, and the machine drifts.
        v = (fail_ratio / ok_ratio) if (fail_ratio and ok_ratio) else login_fail["rps"] / login["rps"]
        cpu = ""
        if login.get("cpu_ms_per_req") and login_fail.get("cpu_ms_per_req"):
            cpu = (f"; CPU/request {login_fail['cpu_ms_per_req']:.1f} vs "
                   f"{login['cpu_ms_per_req']:.1f} ms")
        line("failed logins never slower per request than successful ones", round(v, 3),
             1 - tolerance, v >= 1 - tolerance,
             (f"login_fail {fail_ratio:.0%} vs login {ok_ratio:.0%} of argon2id"
              if (fail_ratio and ok_ratio) else
              f"login_fail {login_fail['rps']:.1f} vs login {login['rps']:.1f} req/s")
             + f" = {v:.0%} "
             f"(need >= {1 - tolerance:.0%}: equal within the {tolerance:.0%} noise tolerance){cpu}")
    else:
        line("failed logins never slower per request than successful ones", None, 1, None,
             "not measured")
    return out


def fmt(v, digits=1) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return f"{v:,.{digits}f}"


def cpu_cell(r: dict) -> str:
    if r.get("server_cpu_s") is None:
        return "-"
    return f"{r['server_cpu_s']:.2f} ({r['server_user_s']:.2f}+{r['server_sys_s']:.2f})"


def markdown(report: dict) -> str:
    m, p = report["machine"], report["params"]
    lines = [
        f"Run {report['started']} (git {m['git_commit']}{' + local changes' if m['git_dirty'] else ''}), "
        f"{m['nproc']} × {m['cpu_model']}, {m['mem_total_gib']} GiB, {m['kernel']}; "
        f"load average at start {' / '.join(map(str, report['load_start']))}, "
        f"at end {' / '.join(map(str, report['load_end']))}.",
        "",
        f"Parameters: {p['connections']} connections, {p['warmup']} s warm-up, {p['duration']} s measured; "
        f"`me` and `refresh` in {p.get('rounds', '-')} rounds, `login`, `login_fail` and `register` in "
        f"{p.get('hash_rounds', '-')} rounds, of {max(1, round(p['duration'] / p.get('rounds', 5)))} s "
        f"each; argon2id baseline runs of {p['baseline_secs']:g} s; "
        f"mixed: {p['mixed_connections']}-connection login flood + {p['probe_connections']}-connection "
        f"/me and /health probes paced at {p['probe_delay_ms']} ms; strength: the same with a "
        f"registration flood of 128-character passwords; flood: {p['flood_connections']} connections."
        + (f" Service settings: {', '.join(f'`{e}`' for e in p['env'])}." if p.get("env") else ""),
        "",
    ]
    b = report.get("baseline")
    if b:
        runs = ", ".join(f"{x['hashes_per_sec']:.1f}" for x in b["runs"])
        lines += [f"Raw argon2id (m={b['runs'][0]['m_kib']} KiB, t={b['runs'][0]['t']}, "
                  f"p={b['runs'][0]['p']}) on {b['runs'][0]['threads']} threads: "
                  f"**{b['hashes_per_sec']:.1f} hashes/s** (mean of {len(b['runs'])} runs, taken "
                  f"between the rounds of login, login_fail and register and around mixed and "
                  f"flood; each is compared with the runs around it: {runs}; median {b['runs'][0]['median_ms_per_hash']:.1f} ms per hash"
                  + (f", {b['cpu_ms_per_hash']:.1f} ms CPU per hash" if b.get("cpu_ms_per_hash") else "")
                  + ").", ""]
    lines += [
        "| scenario | conns | req/s | ratio | p50 ms | p99 ms | max ms | errors | 429/503 | "
        "server CPU s (user+sys) | CPU ms/req | of it not hashing | idle RSS MiB | peak RSS MiB | "
        "exec→healthy ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: |",
    ]
    for r in report["rows"]:
        ratio = f"{r['ratio']:.2f} {r['ratio_of']}" if r.get("ratio") is not None else "-"
        if r.get("baseline_runs") and r.get("ratio_of") == "x argon2":
            ratio += f" of {statistics.mean(r['baseline_runs']):.1f}"
        if r.get("cpu_ratio") is not None:
            ratio += f" (CPU {r['cpu_ratio']:.2f})"
        err = str(r["errors"])
        detail = dict(r["errors_by_status"])
        detail.update({k: v for k, v in r["socket_errors"].items() if v})
        if detail:
            err += " (" + ", ".join(f"{k}: {v}" for k, v in detail.items()) + ")"
        name = r["scenario"] + (f" ({r['expected_status']} expected)" if r["expected_status"] not in (200, 201) else "")
        lines.append(
            f"| {name} | {r['connections']} | {fmt(r['rps'])} | {ratio} | {fmt(r['p50_ms'], 2)} | "
            f"{fmt(r['p99_ms'], 2)} | {fmt(r['max_ms'], 1)} | {err} | {r['by_design']} | "
            f"{cpu_cell(r)} | {fmt(r['cpu_ms_per_req'], 3)} | {fmt(r.get('other_cpu_ms_per_req'), 3)} | "
            f"{fmt(r['idle_rss_mib'])} | "
            f"{fmt(r['peak_rss_mib'])} | {fmt(r['startup_ms'])} |")
    sc = report.get("scale")
    if sc:
        lines += ["", f"Scale: {sc['users']:,} users and as many live sign-ins loaded straight into "
                  f"SQLite in {sc['load_s']} s; database {sc['db_bytes'] / 2**20:.0f} MiB "
                  f"({sc['db_bytes_per_user']} bytes per user with its sign-in); exec to healthy "
                  f"{sc['startup_ms']:.1f} ms, idle RSS {sc['idle_rss_mib']:.1f} MiB."]
    for f in report.get("failed_scenarios") or []:
        lines.append(f"\n**Scenario {f['scenario']} could not run:** {f['error'].splitlines()[0]}")
    lines += ["", "| budget | result | measured |", "| --- | --- | --- |"]
    for c in report["budgets"]:
        lines.append(f"| {c['budget']} | **{c['result']}** | {c['detail']} |")
    return "\n".join(lines) + "\n"


DOC_BEGIN = "<!-- bench:results:begin -->"
DOC_END = "<!-- bench:results:end -->"


def write_doc(md: str) -> None:
    doc = REPO / "BENCHMARKS.md"
    text = doc.read_text() if doc.exists() else f"# Benchmarks\n\n{DOC_BEGIN}\n{DOC_END}\n"
    if DOC_BEGIN not in text or DOC_END not in text:
        text += f"\n{DOC_BEGIN}\n{DOC_END}\n"
    head, rest = text.split(DOC_BEGIN, 1)
    _, tail = rest.split(DOC_END, 1)
    doc.write_text(f"{head}{DOC_BEGIN}\n{md}{DOC_END}{tail}")
    log(f"updated the results in {doc}")


# ----------------------------------------------------------------- main


def main() -> int:
    global DATA_ROOT
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=16, help="connections for the plain scenarios (16)")
    ap.add_argument("--duration", type=int, default=10, help="measured seconds per scenario (10)")
    ap.add_argument("--warmup", type=int, default=3, help="warm-up seconds per scenario (3)")
    ap.add_argument("--scenarios", default=",".join(ALL_SCENARIOS),
                    help=f"comma-separated subset of {','.join(ALL_SCENARIOS)}")
    ap.add_argument("--mixed-connections", type=int, default=64, help="flood of `mixed` and `strength` (64)")
    ap.add_argument("--probe-connections", type=int, default=2, help="connections of each probe of mixed and strength (2)")
    ap.add_argument("--probe-delay-ms", type=int, default=10, help="pause between probe requests (10)")
    ap.add_argument("--mfa-users", type=int, default=400,
                    help="users enrolled for mfa_verify, one challenge each (400)")
    ap.add_argument("--flood-connections", type=int, default=256, help="connections of `flood` (256)")
    ap.add_argument("--baseline-secs", type=float, default=2, help="seconds per argon2id baseline run (2)")
    ap.add_argument("--scale-users", type=int, default=1_000_000,
                    help="users (each with a live sign-in) loaded for the scale scenario (1000000)")
    ap.add_argument("--rounds", type=int, default=5,
                    help="rounds of me and refresh, with a health run between each two; "
                         "--duration / --rounds is every round's length (5)")
    ap.add_argument("--hash-rounds", type=int, default=15,
                    help="rounds of login, login_fail and register, with an argon2id "
                         "baseline run between each two (15)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the argon2id baseline")
    ap.add_argument("--no-build", action="store_true", help="use the existing release binary")
    ap.add_argument("--tolerance", type=float, default=0.05,
                    help="noise tolerance of the login_fail >= login comparison (0.05)")
    ap.add_argument("--rust-log", default=None, help="RUST_LOG for the server (default: the service's)")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="a service setting for every server, on top of the bench's own "
                         "(repeatable), e.g. --env SQLITE_SYNCHRONOUS=normal")
    ap.add_argument("--out", default=str(REPO / "target" / "bench"), help="results directory")
    ap.add_argument("--write-doc", action="store_true", help="replace the results in BENCHMARKS.md")
    ap.add_argument("--keep", action="store_true", help="keep the servers' data directories")
    ap.add_argument("--data-root", default=str(DATA_ROOT),
                    help=f"where the servers' data directories go ({DATA_ROOT})")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a budget line fails")
    ap.add_argument("--profile", default="",
                    help="instead of benchmarking: callgrind profiles of these routes "
                         f"({','.join(PROFILED)})")
    ap.add_argument("--profile-requests", type=int, default=2000,
                    help="requests per callgrind profile (2000)")
    a = ap.parse_args()
    DATA_ROOT = Path(a.data_root).resolve()
    for pair in a.env:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            ap.error(f"--env expects KEY=VALUE, got {pair!r}")
        EXTRA_ENV[key] = value

    if a.profile:
        handle_signals()
        try:
            binary = target_dir() / "release" / "clinic-auth" if a.no_build else build()
            profile(a, binary, [x.strip() for x in a.profile.split(",") if x.strip()], Path(a.out))
        finally:
            cleanup()
        return 0

    scenarios = [s.strip() for s in a.scenarios.split(",") if s.strip()]
    unknown = [s for s in scenarios if s not in ALL_SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario(s): {', '.join(unknown)}")
    if a.duration < 1 or a.warmup < 0 or a.connections < 1 or a.rounds < 1 or a.hash_rounds < 1:
        ap.error("--duration must be >= 1, --warmup >= 0, --connections >= 1, "
                 "--rounds and --hash-rounds >= 1")

    handle_signals()
    started = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    load_start = loadavg()
    log(f"load average at start: {load_start}")
    try:
        ensure_wrk()
        binary = target_dir() / "release" / "clinic-auth" if a.no_build else build()
        bench = Bench(a, binary)
        # The machine is shared and its speed drifts by 10% within minutes,
        # so each hashing-bound scenario is compared with baseline runs
        # right around it: login, login_fail and register take their own
        # between rounds; mixed and flood are bracketed by one run before
        # and one after (adjacent ones share the run between them).
        last = None  # the newest baseline run, while nothing ran after it
        for name in scenarios:
            bracket = name in HASHING_BOUND and name not in ROUNDS and not a.no_baseline
            if bracket and last is None:
                last = bench.baseline()
            before, n_rows = last, len(bench.rows)
            bench.run(name)
            last = None
            if bracket:
                last = bench.baseline()
                for row in bench.rows[n_rows:]:
                    row["baseline_runs"] = [before["hashes_per_sec"], last["hashes_per_sec"]]
                    row["baseline_cpu_ms"] = [r["cpu_ms_per_hash"] for r in (before, last)
                                              if r.get("cpu_ms_per_hash")]
    finally:
        cleanup()

    baseline = None
    baseline_runs = bench.baselines
    if baseline_runs:
        baseline = {"hashes_per_sec": statistics.mean(r["hashes_per_sec"] for r in baseline_runs),
                    "runs": baseline_runs}
    hps = baseline["hashes_per_sec"] if baseline else None
    cpu_runs = [r["cpu_ms_per_hash"] for r in baseline_runs if r.get("cpu_ms_per_hash")]
    if baseline is not None:
        baseline["cpu_ms_per_hash"] = statistics.mean(cpu_runs) if cpu_runs else None
    ratios(bench.rows, hps, baseline["cpu_ms_per_hash"] if baseline else None)
    checks = budgets(bench.rows, bench.starts, hps, a.tolerance, bench.scale)
    report = {
        "started": started.isoformat(),
        "machine": machine_info(),
        "load_start": load_start,
        "load_end": loadavg(),
        "params": {k: getattr(a, k) for k in ("connections", "duration", "warmup", "mixed_connections",
                                              "probe_connections", "probe_delay_ms", "flood_connections",
                                              "baseline_secs", "rounds", "hash_rounds",
                                              "tolerance", "rust_log", "env")},
        "baseline": baseline,
        "rows": bench.rows,
        "starts": bench.starts,
        "budgets": checks,
        "scale": bench.scale,
        "failed_scenarios": bench.failures,
    }
    md = markdown(report)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "results.md").write_text(md)
    if a.write_doc:
        write_doc(md)

    print()
    print(md)
    width = max(len(c["budget"]) for c in checks)
    print("Budget:")
    for c in checks:
        print(f"  {c['result']:4}  {c['budget']:<{width}}  {c['detail']}")
    print(f"\nwritten: {out / 'results.md'}, {out / 'results.json'}")
    if bench.failures:
        print(f"{len(bench.failures)} scenario(s) could not run: "
              + ", ".join(f["scenario"] for f in bench.failures))
        return 2
    failed = [c for c in checks if c["result"] == "FAIL"]
    if failed:
        print(f"{len(failed)} budget line(s) FAILED" + ("" if a.strict else " (not fatal without --strict)"))
        if a.strict:
            return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        cleanup()
        print("interrupted", file=sys.stderr)
        sys.exit(130)
