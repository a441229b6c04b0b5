//! The `sha256` a fetched model is checked against before the model container starts.
//!
//! A file's checksum is its SHA-256. A folder's (a prefix or a registry model) is the SHA-256
//! of its manifest: one `<sha256 of file>  <relative path>\n` line per file, sorted by path
//! bytes, which is exactly what
//! `find . -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum`
//! prints in that folder; so anyone can compute the value to put in the spec.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Lower-case hex SHA-256 of `bytes`.
pub fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks the form of a `sha256` from the spec: 64 hex digits (either case).
pub fn parse_expected(value: &str) -> Result<String, String> {
    let v = value.trim();
    if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(v.to_ascii_lowercase())
    } else {
        Err(format!(
            "sha256 {value:?} is not 64 hexadecimal digits (the output of sha256sum)"
        ))
    }
}

/// SHA-256 of one file, streamed.
pub fn of_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Checksum of a file, or of a folder's manifest (see the module docs).
pub fn of_path(path: &Path) -> std::io::Result<String> {
    if path.is_file() {
        return of_file(path);
    }
    let mut files = Vec::new();
    collect_files(path, PathBuf::new(), &mut files)?;
    // Byte order of the relative path, as `LC_ALL=C sort` orders them.
    files.sort_by(|a, b| {
        a.as_os_str()
            .as_encoded_bytes()
            .cmp(b.as_os_str().as_encoded_bytes())
    });
    let mut manifest = Sha256::new();
    for rel in files {
        let line = format!("{}  {}\n", of_file(&path.join(&rel))?, rel.display());
        manifest.update(line.as_bytes());
    }
    Ok(hex(&manifest.finalize()))
}

fn collect_files(root: &Path, rel: PathBuf, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(root.join(&rel))? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let child = rel.join(entry.file_name());
        if kind.is_dir() {
            collect_files(root, child, out)?;
        } else if kind.is_file() {
            out.push(child);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_its_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("m.bin");
        std::fs::write(&f, b"abc").unwrap();
        assert_eq!(
            of_path(&f).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_folder_is_the_sha256_of_its_sorted_manifest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("b")).unwrap();
        std::fs::write(dir.path().join("b/x"), b"abc").unwrap();
        std::fs::write(dir.path().join("MLmodel"), b"").unwrap();
        // sha256("") and sha256("abc"); 'M' < 'b' in byte order.
        let manifest = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  MLmodel\n\
                        ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  b/x\n";
        assert_eq!(
            of_path(dir.path()).unwrap(),
            hex(&Sha256::digest(manifest.as_bytes()))
        );
    }

    #[test]
    fn expected_values_are_checked() {
        let upper = "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD";
        assert_eq!(parse_expected(upper).unwrap(), upper.to_ascii_lowercase());
        assert!(parse_expected("abc").is_err());
        assert!(parse_expected(&"g".repeat(64)).is_err());
    }
}
