//! Unpacking a fetched archive (`.tar.gz`, `.tgz`, `.tar`, `.zip`) into the model folder.
//!
//! An archive is input from outside: every entry's path is checked before anything is
//! written, and one that is absolute, climbs out with `..`, or is a link (which could point
//! anywhere and make a later entry write through it) refuses the whole archive.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};

/// The kinds of archive Drover unpacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveKind {
    /// gzip-compressed tar.
    TarGz,
    /// Uncompressed tar.
    Tar,
    /// Zip (stored or deflated entries).
    Zip,
}

/// Why an archive was not unpacked.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The file is not an archive Drover knows.
    #[error("{0} is not a .tar.gz, .tgz, .tar or .zip archive")]
    Unknown(String),
    /// An entry would land outside the model folder, or is a link.
    #[error("refused archive entry {entry:?}: {why}")]
    Unsafe {
        /// The entry's name as stored.
        entry: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// The archive is damaged or cannot be read.
    #[error("cannot read the archive: {0}")]
    Corrupt(String),
    /// Writing the unpacked files failed.
    #[error("cannot write unpacked file: {0}")]
    Io(#[from] std::io::Error),
}

/// The kind of archive by file name, then by magic bytes (a URL often has no extension).
pub fn detect(path: &Path) -> Option<ArchiveKind> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        return Some(ArchiveKind::TarGz);
    }
    if name.ends_with(".tar") {
        return Some(ArchiveKind::Tar);
    }
    if name.ends_with(".zip") {
        return Some(ArchiveKind::Zip);
    }
    let mut magic = [0u8; 262];
    let n = File::open(path).and_then(|mut f| f.read(&mut magic)).ok()?;
    match &magic[..n] {
        [0x1f, 0x8b, ..] => Some(ArchiveKind::TarGz),
        [b'P', b'K', 3, 4, ..] => Some(ArchiveKind::Zip),
        m if m.len() >= 262 && &m[257..262] == b"ustar" => Some(ArchiveKind::Tar),
        _ => None,
    }
}

/// Unpacks `archive` into `dest` (which must exist). Returns the number of files written.
pub fn unpack(archive: &Path, dest: &Path) -> Result<usize, ArchiveError> {
    let kind =
        detect(archive).ok_or_else(|| ArchiveError::Unknown(archive.display().to_string()))?;
    let file = BufReader::new(File::open(archive)?);
    match kind {
        ArchiveKind::TarGz => unpack_tar(flate2::read::GzDecoder::new(file), dest),
        ArchiveKind::Tar => unpack_tar(file, dest),
        ArchiveKind::Zip => unpack_zip(file, dest),
    }
}

/// The relative path an entry may be written to, or why it may not.
pub fn safe_relative(name: &str) -> Result<PathBuf, ArchiveError> {
    let unsafe_entry = |why| ArchiveError::Unsafe {
        entry: name.to_string(),
        why,
    };
    if name.contains('\\') || name.contains('\0') {
        return Err(unsafe_entry("backslashes and NUL are not allowed in paths"));
    }
    let mut out = PathBuf::new();
    for component in Path::new(name).components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(unsafe_entry("'..' would leave the model folder")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(unsafe_entry("absolute paths are not allowed"));
            }
        }
    }
    Ok(out)
}

fn unpack_tar<R: Read>(reader: R, dest: &Path) -> Result<usize, ArchiveError> {
    let mut archive = tar::Archive::new(reader);
    let mut written = 0;
    let entries = archive
        .entries()
        .map_err(|e| ArchiveError::Corrupt(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| ArchiveError::Corrupt(e.to_string()))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let rel = safe_relative(&name)?;
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            return Err(ArchiveError::Unsafe {
                entry: name,
                why: "links are not unpacked (they could point outside the model folder)",
            });
        }
        if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
        {
            continue;
        }
        if rel.as_os_str().is_empty() {
            continue;
        }
        let target = dest.join(&rel);
        if kind.is_dir() {
            std::fs::create_dir_all(&target)?;
        } else if kind.is_file() || kind.is_contiguous() {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let mut out = File::create(&target)?;
            std::io::copy(&mut entry, &mut out)
                .map_err(|e| ArchiveError::Corrupt(format!("{name}: {e}")))?;
            written += 1;
        } else {
            return Err(ArchiveError::Unsafe {
                entry: name,
                why: "only files and folders are unpacked (not devices or pipes)",
            });
        }
    }
    Ok(written)
}

fn unpack_zip<R: Read + std::io::Seek>(reader: R, dest: &Path) -> Result<usize, ArchiveError> {
    let mut archive =
        zip::ZipArchive::new(reader).map_err(|e| ArchiveError::Corrupt(e.to_string()))?;
    let mut written = 0;
    for i in 0..archive.len() {
        let mut file = archive
            .by_index(i)
            .map_err(|e| ArchiveError::Corrupt(e.to_string()))?;
        let name = file
            .name()
            .map_err(|e| ArchiveError::Corrupt(e.to_string()))?
            .into_owned();
        let rel = safe_relative(&name)?;
        if file.is_symlink() {
            return Err(ArchiveError::Unsafe {
                entry: name,
                why: "links are not unpacked (they could point outside the model folder)",
            });
        }
        if rel.as_os_str().is_empty() {
            continue;
        }
        let target = dest.join(&rel);
        if file.is_dir() {
            std::fs::create_dir_all(&target)?;
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut out = File::create(&target)?;
        std::io::copy(&mut file, &mut out)
            .map_err(|e| ArchiveError::Corrupt(format!("{name}: {e}")))?;
        written += 1;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A tar.gz whose entry names are written raw into the headers (the `tar` crate's
    /// builder refuses `..` itself, as an attacker's tool would not).
    fn tar_gz(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, kind, data, link) in entries {
            let mut header = tar::Header::new_gnu();
            let raw = &mut header.as_old_mut().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            header.set_entry_type(*kind);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            if !link.is_empty() {
                header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        let tar = builder.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        gz.finish().unwrap()
    }

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, data) in entries {
            w.start_file(*name, options).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn a_tar_gz_is_unpacked() {
        let dir = tempfile::tempdir().unwrap();
        let archive = write(
            dir.path(),
            "model.tar.gz",
            &tar_gz(&[
                ("model/", tar::EntryType::Directory, b"", ""),
                ("model/MLmodel", tar::EntryType::Regular, b"flavors: {}", ""),
                (
                    "./model/model.skops",
                    tar::EntryType::Regular,
                    b"weights",
                    "",
                ),
            ]),
        );
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        assert_eq!(unpack(&archive, &out).unwrap(), 2);
        assert_eq!(
            std::fs::read(out.join("model/model.skops")).unwrap(),
            b"weights"
        );
    }

    #[test]
    fn a_zip_is_unpacked_also_without_an_extension() {
        let dir = tempfile::tempdir().unwrap();
        let archive = write(
            dir.path(),
            "download",
            &zip_of(&[("a/b.txt", b"hello"), ("c.bin", b"x")]),
        );
        assert_eq!(detect(&archive), Some(ArchiveKind::Zip));
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        assert_eq!(unpack(&archive, &out).unwrap(), 2);
        assert_eq!(std::fs::read(out.join("a/b.txt")).unwrap(), b"hello");
    }

    #[test]
    fn path_traversal_in_a_tar_is_refused() {
        for (name, kind, link) in [
            ("../escaped", tar::EntryType::Regular, ""),
            ("model/../../escaped", tar::EntryType::Regular, ""),
            ("/etc/escaped", tar::EntryType::Regular, ""),
            ("link", tar::EntryType::Symlink, "/etc"),
            ("hard", tar::EntryType::Link, "../../etc/passwd"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let archive = write(dir.path(), "m.tgz", &tar_gz(&[(name, kind, b"", link)]));
            let out = dir.path().join("a/b/out");
            std::fs::create_dir_all(&out).unwrap();
            let e = unpack(&archive, &out).unwrap_err();
            assert!(matches!(e, ArchiveError::Unsafe { .. }), "{name}: {e}");
            assert!(!dir.path().join("a/escaped").exists());
            assert!(!dir.path().join("a/b/escaped").exists());
        }
    }

    #[test]
    fn path_traversal_in_a_zip_is_refused() {
        for name in ["../escaped", "/abs", "a\\..\\..\\x", "ok/../../escaped"] {
            let dir = tempfile::tempdir().unwrap();
            let archive = write(dir.path(), "m.zip", &zip_of(&[(name, b"x")]));
            let out = dir.path().join("out");
            std::fs::create_dir(&out).unwrap();
            let e = unpack(&archive, &out).unwrap_err();
            assert!(matches!(e, ArchiveError::Unsafe { .. }), "{name}: {e}");
            assert!(!dir.path().join("escaped").exists());
        }
    }

    #[test]
    fn something_else_is_not_an_archive() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(dir.path(), "model.skops", b"not an archive");
        assert!(matches!(
            unpack(&f, dir.path()),
            Err(ArchiveError::Unknown(_))
        ));
        let broken = write(dir.path(), "broken.tar.gz", b"\x1f\x8bgarbage");
        assert!(unpack(&broken, dir.path()).is_err());
    }
}
