//! Fuzz target for the admin socket client's reading of the daemon's answers
//! (`sealgate_local::admin_socket::parse_answer`: status line, headers, content-length and
//! chunked bodies): no panic, and a body never longer than the input.

/// One input: see the module documentation for what must hold.
pub fn run(data: &[u8]) {
    if let Some((_, body)) = sealgate_local::admin_socket::parse_answer(data) {
        assert!(body.len() <= data.len());
    }
}
