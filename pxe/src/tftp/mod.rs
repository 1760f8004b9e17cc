//! TFTP, sans I/O: the wire format ([`packet`]), option negotiation ([`options`]), the mapping of
//! requested names onto the served root ([`path`]), netascii ([`netascii`]) and one transfer as a
//! state machine ([`session`]). The sockets live in [`crate::server`].

pub mod netascii;
pub mod options;
pub mod packet;
pub mod path;
pub mod session;

pub use packet::{ErrorCode, Mode, Opcode, Packet, PacketError, Request};
pub use session::{Config, Outcome, Session};
