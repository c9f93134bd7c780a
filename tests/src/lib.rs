//! # aegis-e2e: test support
//!
//! The one place for the fake services our binaries talk to in tests, each speaking the
//! real wire format including its errors: LLM APIs ([`llm`]), the AegisVM harness and a
//! direct tether host ([`harness`]), plus helpers to run the real binaries ([`proc`])
//! over a tiny raw HTTP server ([`http`]).

pub mod harness;
pub mod http;
pub mod llm;
pub mod proc;
