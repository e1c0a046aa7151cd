//! Files only flowhost's own user may read.
//!
//! The data folder holds message text and data, contexts, profiles,
//! generated URL tokens (the only credential of `auth = "none"` endpoints)
//! and compiled code. Under the common umask 022 everything created there
//! would be readable by every user of the machine, so folders are created
//! 0700 and files 0600, whatever the umask. A folder that already exists is
//! left as the operator made it (it may be shared on purpose), but one that
//! others can read is reported.

use std::io;
use std::path::Path;

/// Creates `dir` (and its missing parents) with mode 0700. If it already
/// exists and its group or others may use it, logs a warning.
pub(crate) fn create_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        warn_if_shared(dir);
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Makes `file` readable and writable by its owner only, if it exists.
pub(crate) fn restrict_file(file: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        Ok(())
    }
}

/// The options to create a file with mode 0600 (the umask can only take
/// permissions away).
pub(crate) fn file_options() -> std::fs::OpenOptions {
    #[allow(unused_mut)]
    let mut options = std::fs::OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

fn warn_if_shared(dir: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(dir) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    dir = %dir.display(),
                    mode = format_args!("{mode:04o}"),
                    "this folder holds flowhost's data and other users may read it; \
                     consider chmod 700"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(all(test, unix))]
pub(crate) mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    /// The permission bits of `path`.
    pub(crate) fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// Sets the process's umask to the common 022, so that a test sees what
    /// a default installation gets. Every test that creates files runs
    /// under it, so setting it from several tests at once is harmless.
    pub(crate) fn common_umask() {
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    }

    #[test]
    fn creates_folders_0700_whatever_the_umask() {
        common_umask();
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        super::create_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        super::create_dir(&dir).unwrap();
    }
}
