#![no_main]

use libfuzzer_sys::fuzz_target;
use parc_pxe::tftp::packet::{encode_request, Opcode, Packet};
use parc_pxe::tftp::path;

fuzz_target!(|data: &[u8]| {
    match Packet::parse(data) {
        Ok(Packet::Rrq(req)) => {
            let bytes = encode_request(Opcode::Rrq, &req);
            assert_eq!(Packet::parse(&bytes), Ok(Packet::Rrq(req.clone())));
            if let Ok(p) = path::clean(&req.filename) {
                assert!(p.is_relative());
                assert!(p.components().all(|c| matches!(c, std::path::Component::Normal(_))));
            }
        }
        Ok(Packet::Wrq(req)) => {
            let bytes = encode_request(Opcode::Wrq, &req);
            assert_eq!(Packet::parse(&bytes), Ok(Packet::Wrq(req)));
        }
        _ => {}
    }
});
