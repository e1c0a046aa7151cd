//! Compiled flows, cached on disk so that a restart does not recompile
//! unchanged flows (a compile takes tens of milliseconds to seconds; loading
//! cached code takes well under one).
//!
//! Loading compiled code means running it as native code, so an entry is
//! loaded only if this host wrote it and it is intact. Each entry is keyed
//! by the flow's content hash and the engine's compatibility key (another
//! wasmtime build or other settings look for other entries), and carries an
//! HMAC-SHA256, under a random key only this host holds, of that key and
//! the code. An entry that is truncated, corrupt, from another build or
//! from anyone else fails the check, is discarded, and is rebuilt.
//!
//! An entry is two files: `<key>.cwasm`, the code exactly as wasmtime
//! wrote it, and `<key>.tag`, the HMAC. The code is kept whole in its own
//! file so that the runtime can map it rather than copy it: its pages are
//! then the page cache's, shared by the runtime's two engines (and by
//! every process that loads the same entry) and given back under memory
//! pressure, where a copy would cost every engine of every process the
//! code's whole size (33 MiB for a Python flow) in memory of its own.
//! Entries are only ever replaced by renaming a new file over the old, so
//! a file verified and then mapped is not changed under the mapping.

use std::io::Write;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

const MAGIC: &[u8] = b"flowhost compiled flow v2\n";
const TAG: usize = 32;

/// The compile cache in one folder.
pub struct CompileCache {
    dir: PathBuf,
    key: [u8; 32],
    compatibility: u64,
}

impl CompileCache {
    /// Opens (creating it and its secret key if needed) the cache in `dir`,
    /// for code compiled by an engine with this compatibility key.
    pub fn open(dir: &Path, compatibility: u64) -> std::io::Result<CompileCache> {
        crate::private::create_dir(dir)?;
        let key_path = dir.join("key");
        let key = match std::fs::read(&key_path) {
            Ok(key) if key.len() == 32 => key.try_into().expect("32 bytes"),
            _ => {
                let mut key = [0u8; 32];
                rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
                write_atomically(&key_path, &[&key])?;
                key
            }
        };
        Ok(CompileCache {
            dir: dir.to_owned(),
            key,
            compatibility,
        })
    }

    fn stem(&self, content: &[u8; 32]) -> String {
        format!("{}-{:016x}", hex::encode(content), self.compatibility)
    }

    fn path(&self, content: &[u8; 32]) -> PathBuf {
        self.dir.join(format!("{}.cwasm", self.stem(content)))
    }

    fn tag_path(&self, content: &[u8; 32]) -> PathBuf {
        self.dir.join(format!("{}.tag", self.stem(content)))
    }

    fn tag(&self, content: &[u8; 32], code: &[u8]) -> [u8; TAG] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key size");
        mac.update(&self.compatibility.to_le_bytes());
        mac.update(content);
        mac.update(code);
        mac.finalize().into_bytes().into()
    }

    /// The file of the verified code for the flow with this content hash,
    /// if the cache has an intact entry written by this host: for the
    /// runtime to map. A bad entry is deleted.
    pub fn verified_file(&self, content: &[u8; 32]) -> Option<PathBuf> {
        let path = self.path(content);
        let code = std::fs::read(&path).ok()?;
        let tag = std::fs::read(self.tag_path(content)).unwrap_or_default();
        let valid = tag.len() == MAGIC.len() + TAG && tag.starts_with(MAGIC) && {
            let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key size");
            mac.update(&self.compatibility.to_le_bytes());
            mac.update(content);
            mac.update(&code);
            mac.verify_slice(&tag[MAGIC.len()..]).is_ok()
        };
        if !valid {
            tracing::warn!(entry = %path.display(), "discarding a compile cache entry that fails its check; recompiling");
            self.remove(content);
            return None;
        }
        Some(path)
    }

    /// The verified code for the flow with this content hash, read into
    /// memory (see [`verified_file`](Self::verified_file)).
    pub fn get(&self, content: &[u8; 32]) -> Option<Vec<u8>> {
        std::fs::read(self.verified_file(content)?).ok()
    }

    /// Keeps compiled code for the flow with this content hash: the code
    /// first, then its tag, so that a crash between the two leaves an entry
    /// that fails its check. Returns the code's file, which holds `code`
    /// until it is replaced (by a rename, never in place).
    pub fn put(&self, content: &[u8; 32], code: &[u8]) -> std::io::Result<PathBuf> {
        let tag = self.tag(content, code);
        let path = self.path(content);
        write_atomically(&path, &[code])?;
        write_atomically(&self.tag_path(content), &[MAGIC, &tag])?;
        Ok(path)
    }

    /// Deletes the entry for this content hash, if any.
    pub fn remove(&self, content: &[u8; 32]) {
        let _ = std::fs::remove_file(self.tag_path(content));
        let _ = std::fs::remove_file(self.path(content));
    }

    fn refusal_path(&self, key: &[u8; 32]) -> PathBuf {
        self.dir.join(format!("{}.refused", hex::encode(key)))
    }

    /// Why a component was refused when it was compiled before, if it was:
    /// `key` names the component and everything the refusal depended on
    /// (see `Loader`). Remembered so that a file that takes the compiler
    /// its whole time bound is not compiled again at every start.
    pub fn refusal(&self, key: &[u8; 32]) -> Option<String> {
        use std::io::Read;
        let mut entry = String::new();
        let path = self.refusal_path(key);
        std::fs::File::open(&path)
            .ok()?
            .take(4096)
            .read_to_string(&mut entry)
            .ok()?;
        let (until, reason) = entry.split_once('\n')?;
        let until: i64 = until.strip_prefix("until ")?.parse().ok()?;
        if until < crate::store::now_ms() {
            let _ = std::fs::remove_file(path);
            return None;
        }
        Some(reason.to_owned())
    }

    /// Remembers, for `how_long` (`Duration::MAX`: until the file
    /// changes), why the component with this key was refused.
    pub fn remember_refusal(
        &self,
        key: &[u8; 32],
        reason: &str,
        how_long: std::time::Duration,
    ) -> std::io::Result<()> {
        let until = i64::try_from(how_long.as_millis())
            .map_or(i64::MAX, |ms| crate::store::now_ms().saturating_add(ms));
        let entry = format!("until {until}\n{reason}");
        write_atomically(&self.refusal_path(key), &[entry.as_bytes()])
    }

    /// The file of the entry for this content hash (for tests and tools).
    pub fn entry_path(&self, content: &[u8; 32]) -> PathBuf {
        self.path(content)
    }
}

/// Writes `parts` to a temporary file beside `path`, then renames it into
/// place, so a crash never leaves half an entry under the real name. The
/// file is private (0600): the key is a secret, and compiled code is the
/// flows' code.
fn write_atomically(path: &Path, parts: &[&[u8]]) -> std::io::Result<()> {
    let temporary = path.with_extension(format!("tmp{}", std::process::id()));
    let mut options = crate::private::file_options();
    options.write(true).create(true).truncate(true);
    let mut file = options.open(&temporary)?;
    for part in parts {
        file.write_all(part)?;
    }
    // No fsync: an entry torn by a crash fails its HMAC and is rebuilt.
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_what_was_put_and_rejects_any_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::open(dir.path(), 7).unwrap();
        let content = [1u8; 32];
        assert_eq!(cache.get(&content), None);
        cache.put(&content, b"compiled code").unwrap();
        assert_eq!(cache.get(&content).as_deref(), Some(&b"compiled code"[..]));

        // The code is the file, as it was put: for the runtime to map.
        let path = cache.entry_path(&content);
        assert_eq!(cache.verified_file(&content).as_ref(), Some(&path));
        assert_eq!(std::fs::read(&path).unwrap(), b"compiled code");

        // Truncated: rejected and removed.
        std::fs::write(&path, b"compiled co").unwrap();
        assert_eq!(cache.get(&content), None);
        assert!(!path.exists());

        // One byte flipped: rejected.
        cache.put(&content, b"compiled code").unwrap();
        std::fs::write(&path, b"compiled codf").unwrap();
        assert_eq!(cache.get(&content), None);

        // The code without its tag (a crash between the two writes): rejected.
        cache.put(&content, b"compiled code").unwrap();
        std::fs::remove_file(path.with_extension("tag")).unwrap();
        assert_eq!(cache.get(&content), None);

        // Written by another host (another key): rejected.
        let other = tempfile::tempdir().unwrap();
        let stranger = CompileCache::open(other.path(), 7).unwrap();
        stranger.put(&content, b"compiled code").unwrap();
        let theirs = stranger.entry_path(&content);
        std::fs::copy(&theirs, &path).unwrap();
        std::fs::copy(theirs.with_extension("tag"), path.with_extension("tag")).unwrap();
        assert_eq!(cache.get(&content), None);
    }

    #[cfg(unix)]
    #[test]
    fn the_cache_and_its_entries_are_private() {
        use crate::private::tests::{common_umask, mode};
        common_umask();
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cache");
        let cache = CompileCache::open(&dir, 7).unwrap();
        cache.put(&[3u8; 32], b"code").unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("key")), 0o600);
        assert_eq!(mode(&cache.entry_path(&[3u8; 32])), 0o600);
        assert_eq!(
            mode(&cache.entry_path(&[3u8; 32]).with_extension("tag")),
            0o600
        );
    }

    #[test]
    fn refusals_are_remembered_for_as_long_as_asked() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::open(dir.path(), 7).unwrap();
        let (forever, expired) = ([3u8; 32], [4u8; 32]);
        assert_eq!(cache.refusal(&forever), None);
        cache
            .remember_refusal(&forever, "does not compile", std::time::Duration::MAX)
            .unwrap();
        cache
            .remember_refusal(&expired, "too slow", std::time::Duration::ZERO)
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(cache.refusal(&forever).as_deref(), Some("does not compile"));
        assert_eq!(cache.refusal(&expired), None, "past its time");
    }

    #[test]
    fn another_engine_looks_elsewhere_and_the_key_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let content = [2u8; 32];
        CompileCache::open(dir.path(), 7)
            .unwrap()
            .put(&content, b"code")
            .unwrap();
        assert_eq!(
            CompileCache::open(dir.path(), 8).unwrap().get(&content),
            None
        );
        assert_eq!(
            CompileCache::open(dir.path(), 7)
                .unwrap()
                .get(&content)
                .as_deref(),
            Some(&b"code"[..])
        );
    }
}
