//! The handful of file-system operations [`crate::storage::FileStorage`] needs, behind a
//! trait, so that the same storage code runs on the real disk ([`OsFs`]) and on
//! [`crate::simdisk::SimulatedDisk`], which loses, tears and flips what was not synced.
//!
//! # Contract
//!
//! - File data is durable only after [`FsFile::sync_data`] or [`FsFile::sync_all`]
//!   returns on a handle of that file.
//! - A directory entry (a created file, a rename, a removal) is durable only after
//!   [`Fs::sync_dir`] on its directory returns; syncing the file does not make its name
//!   durable.
//! - Writes only ever append at the end of a file ([`Fs::open_append`], [`Fs::create`]).
//! - [`Fs::lock`] returns `None` if another holder has the lock.

use std::fs::{File, OpenOptions};
use std::path::Path;

/// An open file, written only at its end.
pub trait FsFile {
    /// Append `bytes` (not durable before a sync).
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    /// Cut the file to `len` bytes (not durable before a sync).
    fn set_len(&mut self, len: u64) -> std::io::Result<()>;
    /// Make the file's data durable (`fdatasync`).
    fn sync_data(&mut self) -> std::io::Result<()>;
    /// Make the file's data and metadata durable (`fsync`); its name still needs
    /// [`Fs::sync_dir`].
    fn sync_all(&mut self) -> std::io::Result<()>;
}

/// A file system, as [`crate::storage::FileStorage`] uses it.
pub trait Fs {
    /// Open file handle.
    type File: FsFile;
    /// An exclusive lock, released on drop.
    type Lock;
    /// Create `dir` and its parents (assumed durable once this returns).
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()>;
    /// Take the exclusive lock file `path`; `Ok(None)` if someone else holds it.
    fn lock(&self, path: &Path) -> std::io::Result<Option<Self::Lock>>;
    /// Open `path` for appending, creating it empty if it does not exist.
    fn open_append(&self, path: &Path) -> std::io::Result<Self::File>;
    /// Create `path` empty (truncating it if it exists) and open it for writing.
    fn create(&self, path: &Path) -> std::io::Result<Self::File>;
    /// The whole content of `path`.
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>>;
    /// Whether `path` exists.
    fn exists(&self, path: &Path) -> bool;
    /// Names of the entries of `dir` (not sorted; names that are not UTF-8 are skipped).
    fn list(&self, dir: &Path) -> std::io::Result<Vec<String>>;
    /// Atomically rename `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()>;
    /// Remove the file `path`.
    fn remove(&self, path: &Path) -> std::io::Result<()>;
    /// Make the entries of `dir` (creates, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()>;
}

/// The real file system (`std::fs`).
#[derive(Debug, Clone, Copy, Default)]
pub struct OsFs;

impl FsFile for File {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        std::io::Write::write_all(self, bytes)
    }
    fn set_len(&mut self, len: u64) -> std::io::Result<()> {
        File::set_len(self, len)
    }
    fn sync_data(&mut self) -> std::io::Result<()> {
        File::sync_data(self)
    }
    fn sync_all(&mut self) -> std::io::Result<()> {
        File::sync_all(self)
    }
}

impl Fs for OsFs {
    type File = File;
    type Lock = File;

    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)
    }
    fn lock(&self, path: &Path) -> std::io::Result<Option<File>> {
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        Ok(f.try_lock().is_ok().then_some(f))
    }
    fn open_append(&self, path: &Path) -> std::io::Result<File> {
        OpenOptions::new().create(true).append(true).open(path)
    }
    fn create(&self, path: &Path) -> std::io::Result<File> {
        File::create(path)
    }
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn list(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir)? {
            if let Ok(name) = e?.file_name().into_string() {
                out.push(name);
            }
        }
        Ok(out)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        std::fs::rename(from, to)
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        std::fs::remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        File::open(dir)?.sync_all()
    }
}
