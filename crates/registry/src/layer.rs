//! Deterministic layers from local files: entries sorted by name, fixed mtime, uid and
//! gid, no user names, parents of the destination created explicitly, gzip with a fixed
//! header. The same input always gives the same digest, so re-pushing an unchanged build
//! uploads nothing. The layer is written to disk while both digests (compressed and
//! uncompressed, the `diff_id`) are computed, so no layer is ever held in memory.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::digest::{Digest, HashingWriter};
use crate::error::{Error, Result};

/// Local content for one layer: a directory's contents or a single file, placed at `dest`.
#[derive(Debug, Clone)]
pub struct LayerSpec {
    /// A directory (its contents are copied) or a file.
    pub source: PathBuf,
    /// Absolute path inside the image. For a file, a path ending in `/` means "into this
    /// directory"; otherwise it is the file's new name.
    pub dest: String,
}

impl LayerSpec {
    /// Parses the CLI form `SRC[:DEST]` (DEST defaults to `/` for a directory and to
    /// `/<file name>` for a file).
    pub fn parse(s: &str) -> Result<LayerSpec> {
        let (src, dest) = match s.rsplit_once(':') {
            Some((a, b)) if b.starts_with('/') => (a, Some(b.to_string())),
            _ => (s, None),
        };
        if src.is_empty() {
            return Err(Error::InvalidContent {
                what: "layer".into(),
                reason: format!("{s:?} has no source path"),
            });
        }
        let source = PathBuf::from(src);
        let dest = dest.unwrap_or_else(|| {
            if source.is_dir() {
                "/".to_string()
            } else {
                format!(
                    "/{}",
                    source
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                )
            }
        });
        Ok(LayerSpec { source, dest })
    }
}

/// Knobs for layer construction.
#[derive(Debug, Clone)]
pub struct LayerOptions {
    /// Modification time of every entry (seconds since the epoch).
    pub mtime: u64,
    pub uid: u64,
    pub gid: u64,
    /// gzip level 0-9.
    pub gzip_level: u32,
}

impl Default for LayerOptions {
    fn default() -> Self {
        LayerOptions {
            mtime: 0,
            uid: 0,
            gid: 0,
            gzip_level: 6,
        }
    }
}

/// A layer written to disk.
#[derive(Debug, Clone)]
pub struct BuiltLayer {
    pub path: PathBuf,
    /// Digest of the compressed file.
    pub digest: Digest,
    pub size: u64,
    /// Digest of the uncompressed tar (goes into the config's `rootfs.diff_ids`).
    pub diff_id: Digest,
}

/// Builds one gzip layer from `spec` into a new file in `out_dir`.
pub fn build_layer(spec: &LayerSpec, out_dir: &Path, opts: &LayerOptions) -> Result<BuiltLayer> {
    let meta = std::fs::symlink_metadata(&spec.source).map_err(Error::io(&spec.source))?;
    if !spec.dest.starts_with('/') {
        return Err(Error::InvalidContent {
            what: "layer destination".into(),
            reason: format!("{:?} must be an absolute path", spec.dest),
        });
    }
    let dest = clean_dest(&spec.dest)?;
    let file = tempfile::Builder::new()
        .prefix("layer-")
        .suffix(".tar.gz")
        .tempfile_in(out_dir)
        .map_err(Error::io(out_dir))?;
    let (file, path) = file.keep().map_err(|e| Error::io(out_dir)(e.error))?;
    let outer = HashingWriter::new(BufWriter::with_capacity(256 * 1024, file));
    let gz = GzEncoder::new(outer, Compression::new(opts.gzip_level.min(9)));
    let inner = HashingWriter::new(gz);
    let mut tar = tar::Builder::new(inner);
    tar.mode(tar::HeaderMode::Deterministic);
    tar.follow_symlinks(false);

    let mut w = Writer { tar: &mut tar, opts };
    if meta.is_dir() {
        w.parents(&dest, true)?;
        w.dir_contents(&spec.source, &dest)?;
    } else {
        let target = if spec.dest.ends_with('/') {
            let name = spec
                .source
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if dest.is_empty() {
                name
            } else {
                format!("{dest}/{name}")
            }
        } else {
            dest.clone()
        };
        if target.is_empty() {
            return Err(Error::InvalidContent {
                what: "layer destination".into(),
                reason: "a file cannot be placed at /".into(),
            });
        }
        w.parents(&target, false)?;
        w.entry(&spec.source, &target)?;
    }
    let io = |e| Error::Io {
        path: path.clone(),
        source: e,
    };
    let inner = tar.into_inner().map_err(io)?;
    let (gz, diff_id, _) = inner.finish();
    let outer = gz.finish().map_err(io)?;
    let (buf, digest, size) = outer.finish();
    let file = buf.into_inner().map_err(|e| Error::Io {
        path: path.clone(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io)?;
    Ok(BuiltLayer {
        path,
        digest,
        size,
        diff_id,
    })
}

/// `/a/b/` -> `a/b`, refusing `..` so a layer cannot write outside its root.
fn clean_dest(d: &str) -> Result<String> {
    let parts: Vec<&str> = d.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.contains(&"..") {
        return Err(Error::InvalidContent {
            what: "layer destination".into(),
            reason: format!("{d:?} contains .."),
        });
    }
    Ok(parts.join("/"))
}

struct Writer<'a, W: Write> {
    tar: &'a mut tar::Builder<W>,
    opts: &'a LayerOptions,
}

impl<W: Write> Writer<'_, W> {
    fn header(&self, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode & 0o7777);
        h.set_size(size);
        h.set_mtime(self.opts.mtime);
        h.set_uid(self.opts.uid);
        h.set_gid(self.opts.gid);
        h
    }

    fn io(&self, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
        Error::io(path)
    }

    /// Emits directory entries for each parent of `path` (and `path` itself if `incl`).
    fn parents(&mut self, path: &str, incl: bool) -> Result<()> {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let n = if incl {
            parts.len()
        } else {
            parts.len().saturating_sub(1)
        };
        for i in 1..=n {
            let dir = format!("{}/", parts[..i].join("/"));
            let mut h = self.header(tar::EntryType::Directory, 0o755, 0);
            self.tar
                .append_data(&mut h, &dir, std::io::empty())
                .map_err(self.io(Path::new(&dir)))?;
        }
        Ok(())
    }

    fn dir_contents(&mut self, dir: &Path, dest: &str) -> Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(self.io(dir))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(self.io(dir))?;
        // Byte order of names, independent of the file system's order.
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            let target = if dest.is_empty() {
                name
            } else {
                format!("{dest}/{name}")
            };
            self.entry(&e.path(), &target)?;
        }
        Ok(())
    }

    fn entry(&mut self, src: &Path, target: &str) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::symlink_metadata(src).map_err(self.io(src))?;
        let mode = meta.permissions().mode();
        let ft = meta.file_type();
        if ft.is_dir() {
            let mut h = self.header(tar::EntryType::Directory, mode, 0);
            self.tar
                .append_data(&mut h, format!("{target}/"), std::io::empty())
                .map_err(self.io(src))?;
            self.dir_contents(src, target)
        } else if ft.is_symlink() {
            let link = std::fs::read_link(src).map_err(self.io(src))?;
            let mut h = self.header(tar::EntryType::Symlink, 0o777, 0);
            self.tar.append_link(&mut h, target, &link).map_err(self.io(src))
        } else if ft.is_file() {
            let f = File::open(src).map_err(self.io(src))?;
            let mut h = self.header(tar::EntryType::Regular, mode, meta.len());
            self.tar.append_data(&mut h, target, f).map_err(self.io(src))
        } else {
            tracing::warn!(path = %src.display(), "skipping special file (device, socket or fifo)");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn tree(root: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(root.join("bin"))?;
        std::fs::write(root.join("bin/tool"), b"#!/bin/sh\necho hi\n")?;
        std::fs::set_permissions(
            root.join("bin/tool"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        std::fs::write(root.join("b.txt"), b"b")?;
        std::fs::write(root.join("a.txt"), b"a")?;
        std::os::unix::fs::symlink("a.txt", root.join("link"))?;
        Ok(())
    }

    fn entries(path: &Path) -> Vec<(String, u32, u64, u64)> {
        let f = File::open(path).unwrap_or_else(|e| panic!("{e}"));
        let mut a = tar::Archive::new(flate2::read::GzDecoder::new(f));
        let mut out = Vec::new();
        for e in a.entries().unwrap_or_else(|e| panic!("{e}")) {
            let e = e.unwrap_or_else(|e| panic!("{e}"));
            let h = e.header();
            out.push((
                e.path()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                h.mode().unwrap_or(0),
                h.mtime().unwrap_or(1),
                h.uid().unwrap_or(1),
            ));
        }
        out
    }

    #[test]
    fn deterministic_sorted_with_parents() -> std::result::Result<(), Box<dyn std::error::Error>> {
        let src = tempfile::tempdir()?;
        tree(src.path())?;
        let out = tempfile::tempdir()?;
        let spec = LayerSpec {
            source: src.path().to_path_buf(),
            dest: "/app".into(),
        };
        let a = build_layer(&spec, out.path(), &LayerOptions::default())?;
        // Touch a file: mtimes must not matter.
        std::fs::write(src.path().join("a.txt"), b"a")?;
        let b = build_layer(&spec, out.path(), &LayerOptions::default())?;
        assert_eq!(a.digest, b.digest);
        assert_eq!(a.diff_id, b.diff_id);
        assert_ne!(a.digest, a.diff_id);
        assert_eq!(Digest::of(&std::fs::read(&a.path)?), a.digest);
        assert_eq!(std::fs::metadata(&a.path)?.len(), a.size);
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(File::open(&a.path)?).read_to_end(&mut raw)?;
        assert_eq!(Digest::of(&raw), a.diff_id);
        let names: Vec<_> = entries(&a.path).into_iter().map(|e| (e.0, e.1)).collect();
        assert_eq!(
            names,
            vec![
                ("app/".to_string(), 0o755),
                ("app/a.txt".into(), 0o644),
                ("app/b.txt".into(), 0o644),
                ("app/bin/".into(), 0o755),
                ("app/bin/tool".into(), 0o755),
                ("app/link".into(), 0o777),
            ]
        );
        assert!(entries(&a.path).iter().all(|e| e.2 == 0 && e.3 == 0));
        Ok(())
    }

    #[test]
    fn single_file_and_options() -> std::result::Result<(), Box<dyn std::error::Error>> {
        let src = tempfile::tempdir()?;
        tree(src.path())?;
        let out = tempfile::tempdir()?;
        let spec = LayerSpec {
            source: src.path().join("bin/tool"),
            dest: "/usr/local/bin/".into(),
        };
        let opts = LayerOptions {
            mtime: 1_700_000_000,
            uid: 1000,
            gid: 1000,
            gzip_level: 1,
        };
        let l = build_layer(&spec, out.path(), &opts)?;
        let e = entries(&l.path);
        assert_eq!(
            e.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
            vec!["usr/", "usr/local/", "usr/local/bin/", "usr/local/bin/tool"]
        );
        assert!(e.iter().all(|e| e.2 == 1_700_000_000 && e.3 == 1000));
        let bad = LayerSpec {
            source: src.path().join("a.txt"),
            dest: "/../etc/x".into(),
        };
        assert!(build_layer(&bad, out.path(), &opts).is_err());
        Ok(())
    }

    #[test]
    fn parses_cli_specs() -> std::result::Result<(), Box<dyn std::error::Error>> {
        let d = tempfile::tempdir()?;
        let s = LayerSpec::parse(&format!("{}:/srv", d.path().display()))?;
        assert_eq!((s.source.as_path(), s.dest.as_str()), (d.path(), "/srv"));
        let s = LayerSpec::parse(&d.path().display().to_string())?;
        assert_eq!(s.dest, "/");
        let s = LayerSpec::parse("some/file.bin")?;
        assert_eq!(s.dest, "/file.bin");
        Ok(())
    }
}
