//! parc-web: the HTTP API, chunk serving and the technicians' console.
//!
//! Not built yet: the server issue (HTTP API, chunk serving) and the console issue fill this
//! crate. It exists so the workspace layout is the final one from the first commit.
