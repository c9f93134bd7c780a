//! The ureq settings every HTTP client of the kit starts from.

use ureq::config::ConfigBuilder;
use ureq::typestate::AgentScope;

/// Read buffer per connection and per layer; it also bounds a response's header block.
pub const INPUT_BUFFER: usize = 32 * 1024;
/// Write buffer per connection and per layer.
pub const OUTPUT_BUFFER: usize = 16 * 1024;

/// `ureq::Agent::config_builder()` with small connection buffers.
///
/// ureq gives each connection a 128 KiB read and a 128 KiB write buffer, zero-filled on
/// first use, and an HTTPS connection a second pair under its TLS layer: 512 KiB of
/// resident memory per pooled HTTPS connection, more than the whole rest of an idle
/// gateway. Everything we send and receive streams through them, so they only need to
/// hold one header block or one TLS record (16 KiB at most).
pub fn agent_config() -> ConfigBuilder<AgentScope> {
    ureq::Agent::config_builder()
        .input_buffer_size(INPUT_BUFFER)
        .output_buffer_size(OUTPUT_BUFFER)
        .max_response_header_size(INPUT_BUFFER)
}
