//! The state file: every accepted change is on disk before the API acknowledges it.
//!
//! A write goes to a temporary file in the same directory, is flushed to the disk (fsync),
//! renamed over the state file and the directory is flushed too, so after a crash — even
//! `kill -9` or a power cut — the file holds either the previous state or the new one, never
//! a mix, and an acknowledged change is never lost.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::state::Desired;

/// Bumped when the file's meaning changes; a newer file is refused rather than misread.
pub const FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    format: u32,
    #[serde(flatten)]
    desired: Desired,
}

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("cannot read state file {path}: {source}; check its permissions or remove [control] state_file")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("state file {path} is not a valid fulcrum state file: {reason}; restore it from a backup, or move it away to start from the configuration file")]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot write state file {path}: {source}; nothing was changed (check the directory's permissions and free space)")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Reads the state file; `None` if it does not exist yet.
pub fn load(path: &Path) -> Result<Option<Desired>, PersistError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(PersistError::Read {
                path: path.into(),
                source,
            })
        }
    };
    let corrupt = |reason: String| PersistError::Corrupt {
        path: path.into(),
        reason,
    };
    let file: StateFile = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
    if file.format != FORMAT {
        return Err(corrupt(format!(
            "format {} is not the format {FORMAT} this fulcrum writes (written by another version?)",
            file.format
        )));
    }
    Ok(Some(file.desired))
}

/// Writes `desired` to `path` atomically and durably.
pub fn store(path: &Path, desired: &Desired) -> Result<(), PersistError> {
    let error = |source| PersistError::Write {
        path: path.into(),
        source,
    };
    let file = StateFile {
        format: FORMAT,
        desired: desired.clone(),
    };
    let mut text = serde_json::to_vec_pretty(&file).map_err(|e| error(io::Error::other(e)))?;
    text.push(b'\n');
    let name = path
        .file_name()
        .ok_or_else(|| error(io::Error::new(io::ErrorKind::InvalidInput, "no file name")))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = create_temp(&dir, name, &text).map_err(error)?;
    fs::rename(&tmp, path).map_err(error)?;
    // The rename is durable only once the directory entry is.
    File::open(&dir).and_then(|d| d.sync_all()).map_err(error)
}

/// Creates, writes and syncs a new temporary file beside the state file and returns its path.
/// The name is unpredictable and the open refuses an existing file or a symlink
/// (`O_CREAT|O_EXCL|O_NOFOLLOW`), so a planted link cannot make the daemon write elsewhere.
fn create_temp(dir: &Path, name: &std::ffi::OsStr, bytes: &[u8]) -> io::Result<PathBuf> {
    use std::hash::{BuildHasher, Hasher};
    use std::os::unix::fs::OpenOptionsExt;
    let mut last = io::Error::from(io::ErrorKind::AlreadyExists);
    for attempt in 0..16u64 {
        // RandomState is seeded from the OS's random source once per process and
        // perturbed per instance: enough to make the name unguessable ahead of time.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(attempt);
        h.write_u32(std::process::id());
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{:016x}.tmp", h.finish()));
        let tmp = dir.join(tmp_name);
        let opened = OpenOptions::new()
            .write(true)
            .create_new(true)
            // The state names the backends; like the configuration, not for everyone to read.
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp);
        match opened {
            Ok(mut f) => {
                let written = f.write_all(bytes).and_then(|()| f.sync_all());
                if let Err(e) = written {
                    let _ = fs::remove_file(&tmp);
                    return Err(e);
                }
                return Ok(tmp);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, Config};

    #[test]
    fn a_planted_symlink_is_never_followed() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        // The name the temporary file once had, and a guess at any other fixed one.
        symlink(&victim, dir.path().join(".state.json.tmp")).unwrap();
        let config = config::from_str(Config::example(), "example.toml").unwrap();
        let desired = Desired::from_config(&config).unwrap();
        store(&path, &desired).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(load(&path).unwrap().unwrap(), desired);
        assert!(fs::symlink_metadata(&path).unwrap().file_type().is_file());
    }

    #[test]
    fn stores_and_loads_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert!(load(&path).unwrap().is_none());
        let config = config::from_str(Config::example(), "example.toml").unwrap();
        let mut desired = Desired::from_config(&config).unwrap();
        desired.version = 42;
        store(&path, &desired).unwrap();
        assert_eq!(load(&path).unwrap().unwrap(), desired);
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }

    #[test]
    fn a_corrupt_or_future_file_is_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(&path, "{\"format\": 1, \"vips\": [").unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("is not a valid fulcrum state file"), "{e}");
        assert!(e.contains("move it away"), "{e}");
        fs::write(
            &path,
            r#"{"format": 9, "version": 1, "next_vip_id": 0, "next_backend_id": 0, "vips": []}"#,
        )
        .unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("format 9"), "{e}");
    }

    #[test]
    fn a_failed_write_says_nothing_changed() {
        let e = store(
            Path::new("/nonexistent-dir/state.json"),
            &Desired::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("nothing was changed"), "{e}");
    }
}
