//! Writing and reading `subnet.env` on disk (the text itself is rendered by `net-conf`).
//!
//! Readers (the CNI plugin, `mk-docker-opts.sh`) may read the file at any moment, so it is
//! replaced atomically: a temporary file in the same directory is written, synced, given mode
//! 0644 (whatever the umask) and renamed over the old one, and the directory is synced so the
//! rename survives a crash.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of the written file, as flannel's.
const FILE_MODE: u32 = 0o644;
/// Mode of created parent directories, as flannel's.
const DIR_MODE: u32 = 0o755;

/// Atomically replace `path` with `text`: create missing parent directories (0755), write a
/// temporary file next to it, fsync, chmod 0644, rename over `path`, fsync the directory.
/// On failure the temporary file is removed and `path` is left as it was. Errors name the path.
pub fn write_atomic(path: &Path, text: &str) -> io::Result<()> {
    write_atomic_with(path, |f| f.write_all(text.as_bytes()))
}

/// [`write_atomic`] with the content produced by `fill` into a buffered writer on the temporary
/// file (no whole-file string in memory).
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name", path.display()),
        )
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(&dir)
        .map_err(|e| with_path(e, "creating directory", &dir))?;

    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(
        ".tmp-{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    ));
    let tmp = dir.join(tmp_name);

    let result = write_then_rename(&tmp, path, &dir, fill);
    if result.is_err() {
        // Best effort: the temp file may not exist if the failure came before it was created.
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn write_then_rename(
    tmp: &Path,
    path: &Path,
    dir: &Path,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(tmp)
        .map_err(|e| with_path(e, "creating", tmp))?;
    let mut w = io::BufWriter::new(f);
    fill(&mut w).map_err(|e| with_path(e, "writing", tmp))?;
    let f = w
        .into_inner()
        .map_err(|e| with_path(e.into_error(), "writing", tmp))?;
    // The umask may have cleared bits of the creation mode; set it exactly.
    f.set_permissions(Permissions::from_mode(FILE_MODE))
        .map_err(|e| with_path(e, "setting mode of", tmp))?;
    f.sync_all().map_err(|e| with_path(e, "syncing", tmp))?;
    drop(f);
    fs::rename(tmp, path).map_err(|e| with_path(e, "renaming temporary file onto", path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| with_path(e, "syncing directory", dir))?;
    Ok(())
}

fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// The current contents of `path`, if it can be read: a missing file is `None` silently; any
/// other error (permissions, not UTF-8, a directory) is logged as a warning and is `None` too,
/// because the previous file is only a hint (lease reuse).
pub fn read_previous(path: &Path) -> Option<String> {
    match fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read previous subnet file; ignoring it");
            None
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly by design
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    const TEXT: &str = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n";

    #[test]
    fn writes_exact_content_mode_and_parents() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("run/flannel/subnet.env");
        write_atomic(&path, TEXT).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), TEXT);
        assert_eq!(mode(&path), 0o644);
        let parent = path.parent().unwrap();
        // Parent created 0755 (unless the umask is stricter than 022).
        assert_eq!(mode(parent) & 0o700, 0o700);
        assert_eq!(entries(parent), vec!["subnet.env"]);
    }

    #[test]
    fn replaces_existing_file_and_fixes_its_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("subnet.env");
        fs::write(
            &path,
            "OLD=1\nA_MUCH_LONGER_OLD_LINE_THAT_MUST_NOT_SURVIVE=1\n",
        )
        .unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
        let old_inode = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).unwrap());
        write_atomic(&path, TEXT).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), TEXT);
        assert_eq!(mode(&path), 0o644);
        let new_inode = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).unwrap());
        assert_ne!(
            old_inode, new_inode,
            "replaced by rename, not rewritten in place"
        );
        assert_eq!(entries(tmp.path()), vec!["subnet.env"]);
        // Writing again is fine too.
        write_atomic(&path, "X=1\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "X=1\n");
        assert_eq!(entries(tmp.path()), vec!["subnet.env"]);
    }

    #[test]
    fn failure_leaves_no_temp_file_and_names_path() {
        let tmp = tempfile::tempdir().unwrap();
        // The target is a non-empty directory: rename fails after the temp file was written.
        let path = tmp.path().join("subnet.env");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("keep"), "x").unwrap();
        let e = write_atomic(&path, TEXT).unwrap_err();
        assert!(e.to_string().contains("subnet.env"), "{e}");
        assert_eq!(entries(tmp.path()), vec!["subnet.env"]);
    }

    #[test]
    fn parent_is_a_file_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let blocker = tmp.path().join("flannel");
        fs::write(&blocker, "").unwrap();
        let e = write_atomic(&blocker.join("subnet.env"), TEXT).unwrap_err();
        assert!(e.to_string().contains("creating directory"), "{e}");
    }

    #[test]
    fn read_previous_cases() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("subnet.env");
        assert_eq!(read_previous(&path), None);
        write_atomic(&path, TEXT).unwrap();
        assert_eq!(read_previous(&path).as_deref(), Some(TEXT));
        // A directory cannot be read: logged, None.
        assert_eq!(read_previous(tmp.path()), None);
        // Not UTF-8: logged, None.
        fs::write(&path, [0xff, 0xfe, b'\n']).unwrap();
        assert_eq!(read_previous(&path), None);
    }
}
