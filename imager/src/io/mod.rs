//! Positional reads over disks, partitions and files.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Random-access reads, the only thing file-system parsers and capture need from a source.
///
/// Parsers take `&dyn ReadAt` so tests can hand them an in-memory image.
pub trait ReadAt: Sync {
    /// Fills `buf` from `offset`; reading past the end is an `UnexpectedEof` error.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl ReadAt for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| eof())?;
        let end = start.checked_add(buf.len()).ok_or_else(eof)?;
        let src = self.get(start..end).ok_or_else(eof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl ReadAt for Vec<u8> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.as_slice().read_exact_at(buf, offset)
    }
}

/// A window `[start, start + len)` of another reader: one partition of a disk.
#[derive(Debug)]
pub struct Slice<'a, R: ReadAt + ?Sized> {
    inner: &'a R,
    start: u64,
    len: u64,
}

impl<'a, R: ReadAt + ?Sized> Slice<'a, R> {
    pub fn new(inner: &'a R, start: u64, len: u64) -> Self {
        Slice { inner, start, len }
    }
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<R: ReadAt + ?Sized> ReadAt for Slice<'_, R> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).ok_or_else(eof)?;
        if end > self.len {
            return Err(eof());
        }
        self.inner.read_exact_at(buf, self.start + offset)
    }
}

/// Little-endian unsigned field of `len` bytes at `off`; bytes past the end of `buf` read as
/// absent (callers only pass offsets inside their fixed-size structures). Shared by the
/// partition-table and file-system parsers.
pub fn le(buf: &[u8], off: usize, len: usize) -> u64 {
    buf.iter().skip(off).take(len).rev().fold(0, |acc, &b| acc << 8 | u64::from(b))
}

/// Gathers the `[offset, length]` pieces of a chunk into one buffer, in order.
pub fn read_pieces(src: &dyn ReadAt, at: &[[u64; 2]]) -> io::Result<Vec<u8>> {
    let len: u64 = at.iter().map(|p| p[1]).sum();
    let mut buf = vec![0u8; len as usize];
    let mut pos = 0usize;
    for &[o, l] in at {
        src.read_exact_at(&mut buf[pos..pos + l as usize], o)?;
        pos += l as usize;
    }
    Ok(buf)
}

/// Scatters a chunk's bytes back to its `[offset, length]` pieces.
pub fn write_pieces(f: &File, at: &[[u64; 2]], data: &[u8]) -> io::Result<()> {
    let mut pos = 0usize;
    for &[o, l] in at {
        f.write_all_at(&data[pos..pos + l as usize], o)?;
        pos += l as usize;
    }
    Ok(())
}

fn eof() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the device")
}
