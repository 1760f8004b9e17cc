//! The FUSE requests parc's window file system answers: any bytes the kernel (or anything
//! holding /dev/fuse) could hand it parse to a request or an error, never a panic, and every
//! write's data lies inside the bytes read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use parc_agent::window::wire::{parse, Request};

fuzz_target!(|data: &[u8]| {
    if let Ok((h, req)) = parse(data) {
        assert!(h.len as usize <= data.len());
        if let Request::Write { data: w, .. } = req {
            assert!(w.len() <= data.len());
        }
    }
});
