//! Wake-on-LAN: the "magic packet" a powered-off PC's network card listens for (six 0xFF bytes,
//! then its MAC sixteen times), sent as a UDP broadcast to the discard port.

use crate::ipxe::Mac;

/// The port Wake-on-LAN senders use by convention (discard); cards match the payload anywhere.
pub const PORT: u16 = 9;

pub const PACKET_LEN: usize = 6 + 16 * 6;

pub fn magic_packet(mac: Mac) -> [u8; PACKET_LEN] {
    let mut p = [0xff; PACKET_LEN];
    for copy in p[6..].chunks_exact_mut(6) {
        copy.copy_from_slice(&mac.0);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_is_sync_then_sixteen_macs() {
        let mac: Mac = "52:54:00:ab:cd:01".parse().unwrap();
        let p = magic_packet(mac);
        assert_eq!(p.len(), 102);
        assert_eq!(&p[..6], &[0xff; 6]);
        for i in 0..16 {
            assert_eq!(&p[6 + 6 * i..12 + 6 * i], &[0x52, 0x54, 0x00, 0xab, 0xcd, 0x01], "copy {i}");
        }
    }
}
