//! The FUSE kernel protocol as far as a file system of one file needs it (pure: a request's
//! bytes in, a typed request out; replies built as bytes). Layouts are the kernel's
//! `include/uapi/linux/fuse.h`, protocol 7.x with x ≥ 12.

/// The root directory's node.
pub const ROOT: u64 = 1;
/// The one file's node.
pub const FILE: u64 = 2;
/// Size of `fuse_in_header`.
pub const IN_HEADER: usize = 40;
/// The largest write the kernel is told it may send.
pub const MAX_WRITE: u32 = 128 << 10;
/// The buffer one request needs at most (header, `fuse_write_in`, data).
pub const BUFFER: usize = MAX_WRITE as usize + 4096;
/// `FOPEN_DIRECT_IO`: every read and write comes to us, none is served from the page cache.
const FOPEN_DIRECT_IO: u32 = 1;
/// `FATTR_SIZE` in `fuse_setattr_in.valid`.
const FATTR_SIZE: u32 = 1 << 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub len: u32,
    pub opcode: u32,
    pub unique: u64,
    pub node: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    Init {
        major: u32,
        minor: u32,
        max_readahead: u32,
    },
    Lookup {
        name: &'a [u8],
    },
    Getattr,
    /// Only `size` matters: the file's size cannot change.
    Setattr {
        size: Option<u64>,
    },
    Open,
    Read {
        offset: u64,
        size: u32,
    },
    Write {
        offset: u64,
        data: &'a [u8],
    },
    Statfs,
    /// Release, flush, fsync and their directory forms: nothing to keep, answered with 0.
    Done {
        fsync: bool,
    },
    /// Forget, interrupt, batch forget: no reply.
    NoReply,
    /// Anything else: answered ENOSYS.
    Other(u32),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed FUSE request: {0}")]
pub struct WireError(pub String);

fn u32_at(b: &[u8], at: usize) -> Result<u32, WireError> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")))
        .ok_or_else(|| WireError(format!("{} bytes, a field at {at} needs 4", b.len())))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64, WireError> {
    b.get(at..at + 8)
        .map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
        .ok_or_else(|| WireError(format!("{} bytes, a field at {at} needs 8", b.len())))
}

/// One request as read from `/dev/fuse` (the read returns exactly one).
pub fn parse(buf: &[u8]) -> Result<(Header, Request<'_>), WireError> {
    let h = Header { len: u32_at(buf, 0)?, opcode: u32_at(buf, 4)?, unique: u64_at(buf, 8)?, node: u64_at(buf, 16)? };
    if (h.len as usize) < IN_HEADER || h.len as usize > buf.len() {
        return Err(WireError(format!("header says {} bytes, {} were read", h.len, buf.len())));
    }
    let body = &buf[IN_HEADER..h.len as usize];
    let req = match h.opcode {
        26 => Request::Init { major: u32_at(body, 0)?, minor: u32_at(body, 4)?, max_readahead: u32_at(body, 8)? },
        1 => {
            let end = body.iter().position(|&b| b == 0).ok_or_else(|| WireError("lookup name without NUL".into()))?;
            Request::Lookup { name: &body[..end] }
        }
        3 => Request::Getattr,
        4 => {
            let valid = u32_at(body, 0)?;
            Request::Setattr { size: if valid & FATTR_SIZE != 0 { Some(u64_at(body, 16)?) } else { None } }
        }
        14 | 27 => Request::Open,
        15 => Request::Read { offset: u64_at(body, 8)?, size: u32_at(body, 16)? },
        16 => {
            let (offset, size) = (u64_at(body, 8)?, u32_at(body, 16)? as usize);
            let data = body.get(40..40 + size).ok_or_else(|| WireError(format!("write of {size} bytes truncated")))?;
            Request::Write { offset, data }
        }
        17 => Request::Statfs,
        18 | 25 | 29 => Request::Done { fsync: false },
        20 | 30 => Request::Done { fsync: true },
        2 | 36 | 42 => Request::NoReply,
        other => Request::Other(other),
    };
    Ok((h, req))
}

/// A reply: `fuse_out_header` (error as a negative errno, 0 for success) then the payload.
pub fn reply(unique: u64, errno: i32, payload: &[u8]) -> Vec<u8> {
    let len = 16 + payload.len();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&(-errno).to_le_bytes());
    out.extend_from_slice(&unique.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn put(out: &mut Vec<u8>, fields: &[u64], widths: &[usize]) {
    for (v, w) in fields.iter().zip(widths) {
        out.extend_from_slice(&v.to_le_bytes()[..*w]);
    }
}

/// `fuse_init_out` (64 bytes): protocol 7.min(kernel's, 31), no optional feature.
pub fn init_out(kernel_minor: u32, max_readahead: u32) -> Vec<u8> {
    let mut out = Vec::new();
    // major, minor, max_readahead, flags, max_background, congestion_threshold, max_write,
    // time_gran, max_pages, map_alignment, flags2, max_stack_depth.
    put(
        &mut out,
        &[7, u64::from(kernel_minor.min(31)), u64::from(max_readahead), 0, 16, 12, u64::from(MAX_WRITE), 1, 0, 0, 0, 0],
        &[4, 4, 4, 4, 2, 2, 4, 4, 2, 2, 4, 4],
    );
    out.resize(64, 0);
    out
}

/// `fuse_attr` (88 bytes) of the root directory or the file.
pub fn attr(node: u64, file_size: u64) -> Vec<u8> {
    let (size, mode, nlink) = if node == ROOT { (0, 0o040755, 2) } else { (file_size, 0o100600, 1) };
    let mut out = Vec::new();
    // ino, size, blocks, atime, mtime, ctime, three nsec, mode, nlink, uid, gid, rdev, blksize, flags.
    put(
        &mut out,
        &[node, size, size.div_ceil(512), 0, 0, 0, 0, 0, 0, mode, nlink, 0, 0, 0, 4096, 0],
        &[8, 8, 8, 8, 8, 8, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4],
    );
    out
}

/// `fuse_entry_out`: the node, valid for an hour (nothing else changes it).
pub fn entry_out(node: u64, file_size: u64) -> Vec<u8> {
    let mut out = Vec::new();
    put(&mut out, &[node, 0, 3600, 3600, 0, 0], &[8, 8, 8, 8, 4, 4]);
    out.extend(attr(node, file_size));
    out
}

/// `fuse_attr_out`.
pub fn attr_out(node: u64, file_size: u64) -> Vec<u8> {
    let mut out = Vec::new();
    put(&mut out, &[3600, 0, 0], &[8, 4, 4]);
    out.extend(attr(node, file_size));
    out
}

/// `fuse_open_out`: handle 0, direct I/O.
pub fn open_out() -> Vec<u8> {
    let mut out = Vec::new();
    put(&mut out, &[0, u64::from(FOPEN_DIRECT_IO), 0], &[8, 4, 4]);
    out
}

/// `fuse_write_out`.
pub fn write_out(written: u32) -> Vec<u8> {
    let mut out = Vec::new();
    put(&mut out, &[u64::from(written), 0], &[4, 4]);
    out
}

/// `fuse_statfs_out` (80 bytes): a file system with no free space.
pub fn statfs_out(file_size: u64) -> Vec<u8> {
    let mut out = Vec::new();
    put(&mut out, &[file_size.div_ceil(4096), 0, 0, 2, 0, 4096, 255, 4096], &[8, 8, 8, 8, 8, 4, 4, 4]);
    out.resize(80, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(opcode: u32, node: u64, body: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&((IN_HEADER + body.len()) as u32).to_le_bytes());
        b.extend_from_slice(&opcode.to_le_bytes());
        b.extend_from_slice(&77u64.to_le_bytes());
        b.extend_from_slice(&node.to_le_bytes());
        b.extend_from_slice(&[0u8; 16]);
        b.extend_from_slice(body);
        b
    }

    #[test]
    fn requests_parse_and_replies_have_the_kernels_sizes() {
        let init = request(26, 0, &[7, 0, 0, 0, 38, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0]);
        let (h, r) = parse(&init).unwrap();
        assert_eq!((h.unique, r), (77, Request::Init { major: 7, minor: 38, max_readahead: 1 << 17 }));
        assert_eq!(parse(&request(1, ROOT, b"volume\0")).unwrap().1, Request::Lookup { name: b"volume" });
        let mut read = vec![0u8; 40];
        read[8..16].copy_from_slice(&4096u64.to_le_bytes());
        read[16..20].copy_from_slice(&512u32.to_le_bytes());
        assert_eq!(parse(&request(15, FILE, &read)).unwrap().1, Request::Read { offset: 4096, size: 512 });
        let mut write = read.clone();
        write[16..20].copy_from_slice(&3u32.to_le_bytes());
        write.extend_from_slice(b"abc");
        assert_eq!(parse(&request(16, FILE, &write)).unwrap().1, Request::Write { offset: 4096, data: b"abc" });
        let mut setattr = vec![0u8; 88];
        setattr[0] = 1 << 3;
        setattr[16..24].copy_from_slice(&5u64.to_le_bytes());
        assert_eq!(parse(&request(4, FILE, &setattr)).unwrap().1, Request::Setattr { size: Some(5) });
        assert_eq!(parse(&request(39, FILE, &[])).unwrap().1, Request::Other(39));
        assert_eq!(init_out(38, 1).len(), 64);
        assert_eq!(u32::from_le_bytes(init_out(38, 1)[4..8].try_into().unwrap()), 31);
        assert_eq!(attr(FILE, 1).len(), 88);
        assert_eq!(entry_out(FILE, 1).len(), 128);
        assert_eq!(attr_out(FILE, 1).len(), 104);
        assert_eq!(open_out().len(), 16);
        assert_eq!(write_out(3).len(), 8);
        assert_eq!(statfs_out(1).len(), 80);
        let r = reply(77, libc::ENOSYS, &[]);
        assert_eq!((r.len(), i32::from_le_bytes(r[4..8].try_into().unwrap())), (16, -libc::ENOSYS));
    }

    #[test]
    fn truncated_and_lying_requests_are_refused() {
        let mut write = vec![0u8; 40];
        write[16..20].copy_from_slice(&100u32.to_le_bytes());
        assert!(parse(&request(16, FILE, &write)).is_err(), "write shorter than it says");
        assert!(parse(&request(1, ROOT, b"volume")).is_err(), "name without NUL");
        let mut lying = request(3, FILE, &[]);
        lying[0..4].copy_from_slice(&1000u32.to_le_bytes());
        assert!(parse(&lying).is_err());
        assert!(parse(&[1, 2, 3]).is_err());
        for n in 0..60 {
            let _ = parse(&request(15, FILE, &vec![0xFF; n]));
        }
    }
}
