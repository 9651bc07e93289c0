//! Restores through the parallel file writer: entries whose order matters (a name
//! written twice, a hard link to an earlier file), files split into many chunks, and
//! modes and mtimes that must survive the chunks being written by different threads.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use podci_cache::archive::extract_tar_zst;

fn header(size: usize, mode: u32, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size as u64);
    h.set_mode(mode);
    h.set_mtime(mtime);
    h
}

/// Bytes that differ at every offset, so a chunk written at the wrong place shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[i % 4] ^ seed)
        .collect()
}

fn zst(b: tar::Builder<Vec<u8>>) -> Vec<u8> {
    zstd::encode_all(&b.into_inner().unwrap()[..], 1).unwrap()
}

#[test]
fn a_name_written_twice_keeps_the_last_content() {
    let mut b = tar::Builder::new(Vec::new());
    // big first (chunked, slow to land), then a small rewrite of the same name
    let first = pattern(5 << 20, 1);
    b.append_data(&mut header(first.len(), 0o644, 1000), "d/f.bin", &first[..])
        .unwrap();
    for i in 0..200 {
        let data = pattern(3000 + i, 2);
        b.append_data(
            &mut header(data.len(), 0o600, 2000),
            format!("d/small{i}"),
            &data[..],
        )
        .unwrap();
    }
    b.append_data(&mut header(7, 0o640, 3000), "d/f.bin", &b"replace"[..])
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    extract_tar_zst(&zst(b)[..], dir.path(), None).unwrap();
    let f = dir.path().join("d/f.bin");
    assert_eq!(fs::read(&f).unwrap(), b"replace");
    let meta = fs::metadata(&f).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    assert_eq!(meta.mtime(), 3000);
    for i in 0..200 {
        assert_eq!(
            fs::read(dir.path().join(format!("d/small{i}"))).unwrap(),
            pattern(3000 + i, 2)
        );
    }
}

#[test]
fn a_hard_link_sees_its_target_written_in_full() {
    let mut b = tar::Builder::new(Vec::new());
    let big = pattern(9 << 20, 3);
    b.append_data(&mut header(big.len(), 0o755, 1234), "bin/tool", &big[..])
        .unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Link);
    h.set_size(0);
    b.append_link(&mut h, "bin/alias", "bin/tool").unwrap();
    let dir = tempfile::tempdir().unwrap();
    extract_tar_zst(&zst(b)[..], dir.path(), None).unwrap();
    assert_eq!(fs::read(dir.path().join("bin/alias")).unwrap(), big);
    let a = fs::metadata(dir.path().join("bin/alias")).unwrap();
    let t = fs::metadata(dir.path().join("bin/tool")).unwrap();
    assert_eq!(a.ino(), t.ino());
}

#[test]
fn chunked_files_keep_content_mode_and_mtime() {
    let mut b = tar::Builder::new(Vec::new());
    // sizes around the chunk size and many chunks, mixed with small files
    let sizes = [
        0usize,
        1,
        (1 << 20) - 1,
        1 << 20,
        (1 << 20) + 1,
        (7 << 20) + 12345,
    ];
    for (i, &n) in sizes.iter().enumerate() {
        let data = pattern(n, i as u8);
        b.append_data(
            &mut header(n, 0o500 + i as u32, 10_000 + i as u64),
            format!("f{i}"),
            &data[..],
        )
        .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let stats = extract_tar_zst(&zst(b)[..], dir.path(), None).unwrap();
    assert_eq!(stats.content_bytes, sizes.iter().sum::<usize>() as u64);
    for (i, &n) in sizes.iter().enumerate() {
        let p = dir.path().join(format!("f{i}"));
        assert_eq!(fs::read(&p).unwrap(), pattern(n, i as u8), "content of f{i}");
        let m = fs::metadata(&p).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o500 + i as u32, "mode of f{i}");
        assert_eq!(m.mtime(), 10_000 + i as i64, "mtime of f{i}");
    }
}

#[test]
fn a_write_error_in_the_pool_fails_the_extraction() {
    // A directory entry where a file must go: the worker's create fails, and the
    // error reaches the caller instead of being lost on a thread.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_size(0);
    h.set_mode(0o755);
    b.append_data(&mut h, "x/", std::io::empty()).unwrap();
    let data = pattern(100, 9);
    b.append_data(&mut header(100, 0o644, 1), "x", &data[..]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = extract_tar_zst(&zst(b)[..], dir.path(), None).unwrap_err();
    assert!(err.to_string().contains("create"), "{err}");
}
