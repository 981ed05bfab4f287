//! Files and directories only their owner can read: the embedded default's data directory holds
//! databases, keys and emails with live registration links, and must stay private whatever the
//! process umask and whatever modes an older version left behind.
//!
//! Every helper sets the mode explicitly after creating or opening: a umask can only remove bits
//! from the mode asked for at creation, and an existing path keeps whatever mode it had.

use std::fs::{File, Metadata, OpenOptions, Permissions};
use std::io;
use std::path::Path;

/// The mode of a private directory.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// The mode of a private file.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Creates `dir` and any missing parents as private directories, or tightens an existing `dir`.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, PRIVATE_DIR_MODE);
    builder.create(dir)?;
    if let Some(tight) = tightened(&std::fs::metadata(dir)?) {
        std::fs::set_permissions(dir, tight)?;
    }
    Ok(())
}

/// Opens `path` with `options` (which say whether to create, truncate, ...), creating it as a
/// private file, and tightens it if it already existed with a looser mode.
pub fn open_private(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(options, PRIVATE_FILE_MODE);
    let file = options.open(path)?;
    // Through the open handle, so it is the file just opened that is tightened.
    if let Some(tight) = tightened(&file.metadata()?) {
        file.set_permissions(tight)?;
    }
    Ok(file)
}

/// Tightens an existing file or directory to the private mode of its kind; a missing path is
/// left missing.
pub fn make_private(path: &Path) -> io::Result<()> {
    let metadata = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    match tightened(&metadata) {
        Some(tight) => std::fs::set_permissions(path, tight),
        None => Ok(()),
    }
}

/// The permissions to set, when the current ones are not exactly private (setuid, setgid and
/// sticky bits included, so a directory under a setgid parent is reset too).
#[cfg(unix)]
fn tightened(metadata: &Metadata) -> Option<Permissions> {
    use std::os::unix::fs::PermissionsExt;
    let mode = if metadata.is_dir() { PRIVATE_DIR_MODE } else { PRIVATE_FILE_MODE };
    (metadata.permissions().mode() & 0o7777 != mode).then(|| Permissions::from_mode(mode))
}

/// Elsewhere there are no mode bits to set.
#[cfg(not(unix))]
fn tightened(_metadata: &Metadata) -> Option<Permissions> {
    None
}

#[cfg(all(test, unix))]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, Permissions::from_mode(mode)).unwrap();
    }

    fn scratch() -> PathBuf {
        std::env::temp_dir().join(format!("lanyard-fs-{}", uuid::Uuid::new_v4()))
    }

    #[test]
    fn creates_nested_private_directories() {
        let root = scratch();
        let dir = root.join("a").join("b");
        create_private_dir(&dir).unwrap();
        assert_eq!((mode(&root), mode(&root.join("a")), mode(&dir)), (0o700, 0o700, 0o700));
        // Again, on what now exists.
        create_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn tightens_an_existing_loose_directory() {
        let dir = scratch();
        std::fs::create_dir(&dir).unwrap();
        chmod(&dir, 0o2777);
        create_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn creates_a_private_file() {
        let dir = scratch();
        create_private_dir(&dir).unwrap();
        let path = dir.join("new");
        let mut file = open_private(&path, OpenOptions::new().write(true).create_new(true)).unwrap();
        file.write_all(b"secret").unwrap();
        assert_eq!(mode(&path), 0o600);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn tightens_an_existing_loose_file_and_keeps_its_contents() {
        let dir = scratch();
        create_private_dir(&dir).unwrap();
        let path = dir.join("old");
        std::fs::write(&path, "kept").unwrap();
        chmod(&path, 0o666);
        let mut file = open_private(&path, OpenOptions::new().read(true).write(true).create(true)).unwrap();
        let mut contents = String::new();
        file.read_to_string(&mut contents).unwrap();
        assert_eq!((mode(&path), contents.as_str()), (0o600, "kept"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn make_private_tightens_files_and_directories_and_ignores_missing_paths() {
        let dir = scratch();
        std::fs::create_dir(&dir).unwrap();
        let file = dir.join("f");
        std::fs::write(&file, "x").unwrap();
        chmod(&file, 0o644);
        chmod(&dir, 0o755);
        make_private(&file).unwrap();
        make_private(&dir).unwrap();
        make_private(&dir.join("missing")).unwrap();
        assert_eq!((mode(&dir), mode(&file)), (0o700, 0o600));
        assert!(!dir.join("missing").exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
