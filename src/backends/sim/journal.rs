//! Restart safety: every mutation is appended to `<state_dir>/journal.jsonl` as one JSON line
//! before the call returns; opening replays the journal and compacts it to one line per live
//! object. A write(2) is enough: what must survive is a SIGKILL of keel, not a power cut.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::images::ImageRecord;
use super::state::{ContainerRecord, SandboxRecord};

const FILE: &str = "journal.jsonl";
const TMP: &str = "journal.jsonl.tmp";
/// Appends before a running runtime considers compacting its journal.
const COMPACT_MIN_APPENDS: usize = 10_000;

/// Journal failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating state directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading journal {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("compacting journal {path}")]
    Compact {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("appending to journal {path}")]
    Append {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("encoding a journal record")]
    Encode(#[source] serde_json::Error),
}

/// One mutation. Objects are written whole (upserts), so replay is "last line wins".
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    Sandbox(Box<SandboxRecord>),
    SandboxRemoved { id: String },
    Container(Box<ContainerRecord>),
    ContainerRemoved { id: String },
    Image(ImageRecord),
    ImageRemoved { id: String },
}

/// What a journal holds after replay.
#[derive(Debug, Default)]
pub struct Loaded {
    pub sandboxes: BTreeMap<String, SandboxRecord>,
    pub containers: BTreeMap<String, ContainerRecord>,
    pub images: BTreeMap<String, ImageRecord>,
    /// Images removed by RemoveImage (so a configured image stays removed after a restart).
    pub removed_images: BTreeSet<String>,
    /// Lines that did not decode (a torn last write): skipped.
    pub skipped: usize,
}

impl Loaded {
    fn apply(&mut self, r: Record) {
        match r {
            Record::Sandbox(s) => {
                self.sandboxes.insert(s.id.clone(), *s);
            }
            Record::SandboxRemoved { id } => {
                self.sandboxes.remove(&id);
            }
            Record::Container(c) => {
                self.containers.insert(c.id.clone(), *c);
            }
            Record::ContainerRemoved { id } => {
                self.containers.remove(&id);
            }
            Record::Image(i) => {
                self.removed_images.remove(&i.id);
                self.images.insert(i.id.clone(), i);
            }
            Record::ImageRemoved { id } => {
                self.images.remove(&id);
                self.removed_images.insert(id);
            }
        }
    }

    pub fn records(&self) -> impl Iterator<Item = Record> + '_ {
        let sandboxes = self.sandboxes.values().map(|s| Record::Sandbox(Box::new(s.clone())));
        let containers = self.containers.values().map(|c| Record::Container(Box::new(c.clone())));
        let images = self.images.values().map(|i| Record::Image(i.clone()));
        let removed = self
            .removed_images
            .iter()
            .map(|id| Record::ImageRemoved { id: id.clone() });
        sandboxes.chain(containers).chain(images).chain(removed)
    }
}

/// The open journal.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: std::fs::File,
    /// Lines appended since the last compaction, and records written by it.
    appended: usize,
    live: usize,
}

impl Journal {
    /// Replays `<dir>/journal.jsonl`, compacts it, and opens it for appending.
    pub fn open(dir: &Path) -> Result<(Journal, Loaded), Error> {
        std::fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(FILE);
        let mut loaded = Loaded::default();
        match std::fs::File::open(&path) {
            Ok(f) => {
                for line in std::io::BufReader::new(f).lines() {
                    let line = line.map_err(|source| Error::Read {
                        path: path.clone(),
                        source,
                    })?;
                    if line.trim().is_empty() {
                        continue;
                    }
                    match serde_json::from_str::<Record>(&line) {
                        Ok(r) => loaded.apply(r),
                        Err(_) => loaded.skipped += 1,
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(Error::Read { path, source }),
        }
        let live = loaded.records().count();
        let journal = Journal {
            file: Self::rewrite(dir, &path, loaded.records())?,
            path,
            appended: 0,
            live,
        };
        Ok((journal, loaded))
    }

    /// Writes `records` to a temp file, renames it over the journal and opens it for appending.
    fn rewrite(dir: &Path, path: &Path, records: impl Iterator<Item = Record>) -> Result<std::fs::File, Error> {
        let tmp = dir.join(TMP);
        let compact_err = |source| Error::Compact {
            path: path.to_path_buf(),
            source,
        };
        {
            // Container configs carry env values (secrets among them): owner-only, as containerd's
            // metadata store.
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(compact_err)?;
            let mut out = std::io::BufWriter::new(file);
            for r in records {
                serde_json::to_writer(&mut out, &r).map_err(Error::Encode)?;
                out.write_all(b"\n").map_err(compact_err)?;
            }
            out.flush().map_err(compact_err)?;
        }
        std::fs::rename(&tmp, path).map_err(compact_err)?;
        std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|source| Error::Append {
                path: path.to_path_buf(),
                source,
            })
    }

    /// Whether enough has been appended since the last compaction to rewrite the journal
    /// (keeps a long-running node's journal proportional to what exists).
    pub fn wants_compaction(&self) -> bool {
        self.appended > COMPACT_MIN_APPENDS && self.appended > 4 * self.live
    }

    /// Replaces the journal with `records` (the complete live state).
    pub fn compact(&mut self, records: Vec<Record>) -> Result<(), Error> {
        let dir = self.path.parent().map(Path::to_path_buf).unwrap_or_default();
        self.file = Self::rewrite(&dir, &self.path, records.iter().cloned())?;
        self.live = records.len();
        self.appended = 0;
        Ok(())
    }

    /// Appends one record as a single write, so a kill never leaves half of it visible
    /// to the next reader except as one undecodable (skipped) line.
    pub fn append(&mut self, r: &Record) -> Result<(), Error> {
        let mut line = serde_json::to_vec(r).map_err(Error::Encode)?;
        line.push(b'\n');
        self.file.write_all(&line).map_err(|source| Error::Append {
            path: self.path.clone(),
            source,
        })?;
        self.appended += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &str) -> ImageRecord {
        ImageRecord {
            id: id.into(),
            repo_tags: vec![format!("docker.io/library/{id}:latest")],
            repo_digests: vec![],
            size: 1,
        }
    }

    #[test]
    fn replays_last_write_wins_and_compacts() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut j, loaded) = Journal::open(dir.path()).unwrap();
            assert!(loaded.images.is_empty());
            j.append(&Record::Image(image("a"))).unwrap();
            j.append(&Record::Image(image("b"))).unwrap();
            j.append(&Record::ImageRemoved { id: "a".into() }).unwrap();
        }
        // A torn trailing line is skipped, not fatal.
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE))
            .unwrap()
            .write_all(b"{\"image\":{\"id\"")
            .unwrap();
        let (_, loaded) = Journal::open(dir.path()).unwrap();
        assert_eq!(loaded.skipped, 1);
        assert_eq!(loaded.images.keys().collect::<Vec<_>>(), vec!["b"]);
        assert!(loaded.removed_images.contains("a"));
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (_, again) = Journal::open(dir.path()).unwrap();
        assert_eq!(again.skipped, 0);
        assert_eq!(again.images.len(), 1);
    }

    #[test]
    fn compacts_while_open() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        for _ in 0..=COMPACT_MIN_APPENDS {
            j.append(&Record::Image(image("a"))).unwrap();
        }
        assert!(j.wants_compaction());
        j.compact(vec![Record::Image(image("a"))]).unwrap();
        assert!(!j.wants_compaction());
        j.append(&Record::Image(image("b"))).unwrap();
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert_eq!(text.lines().count(), 2);
        let (_, loaded) = Journal::open(dir.path()).unwrap();
        assert_eq!(loaded.images.len(), 2);
    }
}
