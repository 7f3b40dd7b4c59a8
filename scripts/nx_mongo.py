"""Starts nx-27017 (a MongoDB wire-protocol server over SQLite) for the tests.

Why a launcher instead of the `nx-27017` command:

1. Workaround. neosqlite's SQL update path (json_set) stores a `$set`
   datetime as a string and a `$set` boolean as an integer, so the next typed
   read (`revoked: bool`, `revoked_at: DateTime`) fails to deserialize. The
   Python update path keeps BSON types, so the SQL path is switched off here.
   tests/mongo_store.rs has a test that reads raw documents after `$set` and
   fails if this stops working (e.g. after a version bump).
2. Watchdog. `--watch-parent PID` makes the server exit when that process
   (the test binary) is gone, however it ended, so killed or crashed test runs
   do not leave servers behind. Polling is used rather than prctl
   PR_SET_PDEATHSIG because the death signal fires when the spawning *thread*
   exits, and cargo runs each test on its own short-lived thread.
3. Isolation. nx-27017 refuses to start if its default pid file
   (/tmp/nx_27017.pid) names a live process, which breaks parallel test
   binaries; unless given, the pid file is per process and the log file is
   /dev/null (the log still goes to stderr).

Usage: nx_mongo.py [--watch-parent PID] <nx-27017 arguments...>
"""

import os
import sys
import tempfile
import threading
import time

from neosqlite.collection.query_helper import QueryHelper

# Fail loudly if a neosqlite upgrade renamed the method: silently running
# without the workaround would bring the type corruption back.
if not hasattr(QueryHelper, "_can_use_sql_updates"):
    sys.exit("nx_mongo.py: neosqlite has no QueryHelper._can_use_sql_updates; update the workaround")


def _never_use_sql_updates(self, *args, **kwargs):
    return False


QueryHelper._can_use_sql_updates = _never_use_sql_updates

from nx_27017.nx_27017 import main  # noqa: E402  (after the patch, on purpose)

WATCH_INTERVAL_SECONDS = 0.5


def _pop_option(argv, name):
    """Removes `name VALUE` from argv and returns VALUE (or None)."""
    if name not in argv:
        return None
    i = argv.index(name)
    if i + 1 >= len(argv):
        sys.exit(f"nx_mongo.py: {name} needs a value")
    value = argv[i + 1]
    del argv[i : i + 2]
    return value


def _option_value(argv, name):
    if name in argv and argv.index(name) + 1 < len(argv):
        return argv[argv.index(name) + 1]
    return None


def _parent_alive(pid):
    # Reparenting (to init or a subreaper) is the reliable sign the parent
    # died; kill(pid, 0) alone could be fooled by a reused pid.
    if os.getppid() != pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _watch_parent(pid, pid_file):
    while _parent_alive(pid):
        time.sleep(WATCH_INTERVAL_SECONDS)
    try:
        os.remove(pid_file)
    except OSError:
        pass
    # _exit: the server loop owns the main thread, and nothing it holds
    # (a test database) is worth a graceful shutdown.
    os._exit(0)


def run():
    argv = sys.argv[1:]
    parent = _pop_option(argv, "--watch-parent")

    if _option_value(argv, "--pid-file") is None:
        argv += ["--pid-file", os.path.join(tempfile.gettempdir(), f"nx_mongo-{os.getpid()}.pid")]
    if _option_value(argv, "--log-file") is None:
        argv += ["--log-file", os.devnull]

    if parent is not None:
        parent_pid = int(parent)
        if not _parent_alive(parent_pid):
            sys.exit(0)
        threading.Thread(
            target=_watch_parent,
            args=(parent_pid, _option_value(argv, "--pid-file")),
            daemon=True,
        ).start()

    sys.argv = [sys.argv[0]] + argv
    return main()


if __name__ == "__main__":
    sys.exit(run())
