//! Signed checkpoints of the audit chain, kept outside the database.
//!
//! The chain's links catch a changed or removed record in the middle, but
//! removing the newest records leaves a shorter chain whose links all hold,
//! and someone who rewrites every record could re-link them too. So, at
//! least every AUDIT_CHECKPOINT_INTERVAL while the chain grows, at start and
//! at shutdown, the service signs `(seq, head hash, time)` with AUDIT_KEY
//! and appends it to AUDIT_CHECKPOINT_FILE, and logs the same line (target
//! `audit`) for the log system to keep off the host. `audit verify` then
//! checks that the chain still holds every checkpointed record unchanged.
//!
//! One line per checkpoint, self-describing, for example:
//!
//! ```text
//! clinic-auth-audit-checkpoint v=1 seq=12 head=<64 hex> time=2026-01-02T03:04:05.678Z key=<key id> mac=<64 hex>
//! ```
//!
//! `mac` is HMAC-SHA256 under AUDIT_KEY of everything before ` mac=`;
//! `key` is the key's public id ([`AuditKey::id`]), so a wrong AUDIT_KEY is
//! told apart from altered lines. Several instances of the service may
//! append to one file: each line is a single write to a file opened for
//! appending, and lines need not come in seq order (two instances may sign
//! heads a moment apart), which verification does not assume.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::domain::audit::{canonical_time, GENESIS_HASH};
use crate::domain::{AuditKey, HashVersion};
use crate::storage::{AuditQuery, AuditStore};

/// The first word of every checkpoint line.
pub const LINE_TAG: &str = "clinic-auth-audit-checkpoint";

/// The chain's head at a moment: `seq` 0 with the genesis hash is the
/// empty chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: u64,
    pub head: String,
    pub time: DateTime<Utc>,
}

/// Why a line of the checkpoint file does not count as a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineFault {
    /// Not a checkpoint line at all (or cut short).
    Malformed,
    /// Signed with another key: AUDIT_KEY is wrong (or the id was altered).
    OtherKey(String),
    /// Its MAC does not match: the line was altered.
    BadMac,
}

impl Checkpoint {
    fn body(&self, key_id: &str) -> String {
        format!(
            "{LINE_TAG} v=1 seq={} head={} time={} key={key_id}",
            self.seq,
            self.head,
            canonical_time(self.time)
        )
    }

    /// The signed line (without its newline).
    pub fn to_line(&self, key: &AuditKey) -> String {
        let body = self.body(&key.id());
        let mac = key.mac_hex(body.as_bytes());
        format!("{body} mac={mac}")
    }

    /// Reads one line, which must be signed by `key`.
    pub fn parse_line(line: &str, key: &AuditKey) -> Result<Self, LineFault> {
        let (body, mac) = line
            .trim()
            .rsplit_once(" mac=")
            .ok_or(LineFault::Malformed)?;
        let mut words = body.split(' ');
        if words.next() != Some(LINE_TAG) {
            return Err(LineFault::Malformed);
        }
        let (mut version, mut seq, mut head, mut time, mut key_id) = (None, None, None, None, None);
        for word in words {
            let (name, value) = word.split_once('=').ok_or(LineFault::Malformed)?;
            let slot = match name {
                "v" => &mut version,
                "seq" => &mut seq,
                "head" => &mut head,
                "time" => &mut time,
                "key" => &mut key_id,
                _ => return Err(LineFault::Malformed),
            };
            if slot.replace(value).is_some() {
                return Err(LineFault::Malformed);
            }
        }
        let (Some("1"), Some(seq), Some(head), Some(time), Some(key_id)) =
            (version, seq, head, time, key_id)
        else {
            return Err(LineFault::Malformed);
        };
        if key_id != key.id() {
            return Err(LineFault::OtherKey(key_id.to_owned()));
        }
        if !key.verify_hex(body.as_bytes(), mac) {
            return Err(LineFault::BadMac);
        }
        // Past the MAC, the fields are what this service wrote; parse them
        // strictly all the same.
        let checkpoint = Checkpoint {
            seq: seq.parse().map_err(|_| LineFault::Malformed)?,
            head: head.to_owned(),
            time: DateTime::parse_from_rfc3339(time)
                .map_err(|_| LineFault::Malformed)?
                .with_timezone(&Utc),
        };
        Ok(checkpoint)
    }
}

/// What the checkpoint file holds, by line number (from 1).
#[derive(Debug, Default)]
pub struct CheckpointFile {
    pub checkpoints: Vec<(usize, Checkpoint)>,
    pub faults: Vec<(usize, LineFault)>,
}

/// Reads the checkpoint file at `path` with `key`; `Ok(None)` when there
/// is no such file. Blank lines are skipped.
pub fn read_checkpoints(path: &Path, key: &AuditKey) -> std::io::Result<Option<CheckpointFile>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut file = CheckpointFile::default();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match Checkpoint::parse_line(line, key) {
            Ok(checkpoint) => file.checkpoints.push((index + 1, checkpoint)),
            Err(fault) => file.faults.push((index + 1, fault)),
        }
    }
    Ok(Some(file))
}

/// Signs the chain's head into the checkpoint file (and the log).
pub struct Checkpointer {
    store: Arc<dyn AuditStore>,
    key: AuditKey,
    path: PathBuf,
    /// The head this process signed last: an unchanged head is not signed
    /// again, so an idle service adds no lines. The lock also keeps the
    /// interval task and the shutdown checkpoint from interleaving.
    last: Mutex<Option<(u64, String)>>,
}

impl Checkpointer {
    /// Creates the file if needed (0600, and its directory 0700), so that a
    /// path the service cannot write stops start-up instead of surfacing at
    /// the first checkpoint.
    pub fn open(store: Arc<dyn AuditStore>, key: AuditKey, path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::private_fs::create_dir(dir).with_context(|| {
                format!("cannot create {} (AUDIT_CHECKPOINT_FILE)", dir.display())
            })?;
        }
        open_for_append(path)
            .with_context(|| format!("cannot open {} (AUDIT_CHECKPOINT_FILE)", path.display()))?;
        Ok(Self {
            store,
            key,
            path: path.to_owned(),
            last: Mutex::new(None),
        })
    }

    /// Signs the chain's current head unless this process signed that very
    /// head last; returns the checkpoint written, if any.
    pub async fn checkpoint(&self) -> anyhow::Result<Option<Checkpoint>> {
        let mut last = self.last.lock().await;
        let newest = self
            .store
            .query_audit_events(&AuditQuery {
                limit: 1,
                ..AuditQuery::default()
            })
            .await
            .context("cannot read the audit chain's head")?
            .pop();
        let (seq, head) = match &newest {
            Some(record) => {
                // Signing a forged head would vouch for it: a keyed head
                // must verify under our key before it is signed.
                if record.version == HashVersion::V2
                    && record.expected_hash(&self.key) != record.hash
                {
                    anyhow::bail!(
                        "the newest audit record (seq {}) does not verify under AUDIT_KEY; \
                         not signing it (run `clinic-auth audit verify`)",
                        record.seq
                    );
                }
                (record.seq, record.hash.clone())
            }
            None => (0, GENESIS_HASH.to_owned()),
        };
        if last.as_ref().is_some_and(|(s, h)| *s == seq && *h == head) {
            return Ok(None);
        }
        let now = Utc::now();
        let checkpoint = Checkpoint {
            seq,
            head,
            // Milliseconds, as the line shows them.
            time: DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now),
        };
        let line = checkpoint.to_line(&self.key);
        let path = self.path.clone();
        let written = line.clone();
        tokio::task::spawn_blocking(move || append_line(&path, &written))
            .await
            .context("the checkpoint writer stopped")?
            .with_context(|| format!("cannot append to {}", self.path.display()))?;
        // The same line on the log stream: a copy off the host that an
        // insider on it cannot take back.
        tracing::info!(
            target: "audit",
            seq = checkpoint.seq,
            head = %checkpoint.head,
            line = %line,
            "audit checkpoint"
        );
        *last = Some((checkpoint.seq, checkpoint.head.clone()));
        Ok(Some(checkpoint))
    }

    /// Checkpoints at once, then every `every` (a head that did not move is
    /// skipped). A failure (database down, disk full) is logged and tried
    /// again at the next interval.
    pub fn spawn(self: &Arc<Self>, every: Duration) -> JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = this.checkpoint().await {
                    tracing::warn!(
                        target: "audit",
                        error = format!("{e:#}"),
                        "cannot write an audit checkpoint; trying again at the next interval"
                    );
                }
            }
        })
    }
}

fn open_for_append(path: &Path) -> std::io::Result<std::fs::File> {
    crate::private_fs::file_options()
        .append(true)
        .create(true)
        .open(path)
}

/// One write per line, so lines from several writers never interleave, and
/// on disk before the checkpoint counts as written.
fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    let mut file = open_for_append(path)?;
    file.write_all(format!("{line}\n").as_bytes())?;
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AuditEvent, AuditOutcome, NewAuditEvent};
    use crate::storage::sqlite::SqliteStore;

    fn key() -> AuditKey {
        AuditKey::from_hex(&"42".repeat(32)).unwrap()
    }

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            seq: 12,
            head: "ab".repeat(32),
            time: DateTime::from_timestamp_millis(1_700_000_000_123).unwrap(),
        }
    }

    #[test]
    fn a_line_round_trips_and_any_change_is_caught() {
        let line = checkpoint().to_line(&key());
        assert!(
            line.starts_with(&format!(
                "{LINE_TAG} v=1 seq=12 head={} time=2023-11-14T22:13:20.123Z key={} mac=",
                "ab".repeat(32),
                key().id()
            )),
            "{line}"
        );
        assert_eq!(Checkpoint::parse_line(&line, &key()), Ok(checkpoint()));
        for (from, to) in [
            (" seq=12 ", " seq=11 "),
            ("time=2023", "time=2024"),
            (" head=ab", " head=ac"),
        ] {
            let altered = line.replace(from, to);
            assert_eq!(
                Checkpoint::parse_line(&altered, &key()),
                Err(LineFault::BadMac),
                "{from}"
            );
        }
        let other = AuditKey::from_hex(&"24".repeat(32)).unwrap();
        assert_eq!(
            Checkpoint::parse_line(&line, &other),
            Err(LineFault::OtherKey(key().id()))
        );
        for junk in [
            "",
            "hello",
            &line[..line.len() - 70],
            &format!("{line} x=1"),
        ] {
            assert_ne!(Checkpoint::parse_line(junk, &key()), Ok(checkpoint()));
        }
    }

    fn event(i: u32) -> NewAuditEvent {
        NewAuditEvent {
            id: format!("e{i}"),
            time: DateTime::from_timestamp_millis(1_700_000_000_000).unwrap(),
            event: AuditEvent::Logout,
            outcome: AuditOutcome::Success,
            user_id: None,
            email: None,
            ip: None,
            user_agent: None,
            request_id: None,
            detail: None,
        }
    }

    /// A fresh SQLite store, and a checkpointer on it writing to a file in
    /// a directory that does not exist yet.
    async fn fresh() -> (tempfile::TempDir, Arc<SqliteStore>, PathBuf, Checkpointer) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/audit.db", dir.path().display());
        let store = Arc::new(SqliteStore::connect(&url).await.unwrap());
        let path = dir.path().join("sub/checkpoints");
        let checkpointer = Checkpointer::open(store.clone(), key(), &path).unwrap();
        (dir, store, path, checkpointer)
    }

    /// A head that did not move is not signed again; one that moved is.
    #[tokio::test]
    async fn only_a_moved_head_is_signed() {
        let (dir, store, path, checkpointer) = fresh().await;
        assert!(path.exists(), "created at open");

        let first = checkpointer.checkpoint().await.unwrap().unwrap();
        assert_eq!((first.seq, first.head.as_str()), (0, GENESIS_HASH));
        assert_eq!(checkpointer.checkpoint().await.unwrap(), None);

        let links = store
            .append_audit_events(&[event(1), event(2)], &key())
            .await
            .unwrap();
        let second = checkpointer.checkpoint().await.unwrap().unwrap();
        assert_eq!((second.seq, &second.head), (2, &links[1].hash));
        assert_eq!(checkpointer.checkpoint().await.unwrap(), None);

        let file = read_checkpoints(&path, &key()).unwrap().unwrap();
        assert!(file.faults.is_empty());
        assert_eq!(
            file.checkpoints,
            vec![(1, first), (2, second)],
            "one line per moved head"
        );
        assert!(read_checkpoints(&dir.path().join("none"), &key())
            .unwrap()
            .is_none());
    }

    /// A head that does not verify under the key (written with another
    /// one, i.e. forged) is not vouched for.
    #[tokio::test]
    async fn a_forged_head_is_not_signed() {
        let (_dir, store, path, checkpointer) = fresh().await;
        let forger = AuditKey::from_hex(&"66".repeat(32)).unwrap();
        store
            .append_audit_events(&[event(1)], &forger)
            .await
            .unwrap();
        let refused = checkpointer.checkpoint().await.unwrap_err();
        assert!(
            format!("{refused:#}").contains("does not verify"),
            "{refused:#}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
    }
}
