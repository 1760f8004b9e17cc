//! Netascii encoding (RFC 1350, RFC 764): LF becomes CR LF and a bare CR becomes CR NUL.

use std::io::{self, Read};

/// Reads a file and yields its netascii form.
#[derive(Debug)]
pub struct NetasciiReader<R> {
    inner: R,
    /// A byte owed from the previous call (the second half of an expansion).
    pending: Option<u8>,
    buf: Vec<u8>,
}

impl<R: Read> NetasciiReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Self { inner, pending: None, buf: vec![0; 4096] }
    }
}

impl<R: Read> Read for NetasciiReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        let mut n = 0;
        if let Some(b) = self.pending.take() {
            out[0] = b;
            n = 1;
        }
        // Each input byte expands to at most two output bytes: read at most half the space left.
        let want = ((out.len() - n) / 2).clamp(1, self.buf.len());
        if n == out.len() {
            return Ok(n);
        }
        let got = self.inner.read(&mut self.buf[..want])?;
        for &b in &self.buf[..got] {
            let (first, second) = match b {
                b'\n' => (b'\r', Some(b'\n')),
                b'\r' => (b'\r', Some(0)),
                b => (b, None),
            };
            out[n] = first;
            n += 1;
            if let Some(s) = second {
                if n < out.len() {
                    out[n] = s;
                    n += 1;
                } else {
                    self.pending = Some(s);
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(input: &[u8], chunk: usize) -> Vec<u8> {
        let mut r = NetasciiReader::new(input);
        let mut out = Vec::new();
        let mut buf = vec![0; chunk];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    #[test]
    fn expands_lf_and_cr() {
        for chunk in [1, 2, 3, 7, 512] {
            assert_eq!(convert(b"a\nb\rc\r\n", chunk), b"a\r\nb\r\0c\r\0\r\n", "chunk {chunk}");
            assert_eq!(convert(b"", chunk), b"");
            assert_eq!(convert(b"\n\n\n", chunk), b"\r\n\r\n\r\n");
        }
    }
}
