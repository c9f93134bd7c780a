//! # aegis-e2e: test support
//!
//! The one place for the fake services our binaries talk to in tests, each speaking the
//! real wire format including its errors: LLM APIs ([`llm`]), Telegram's Bot API
//! ([`telegram`]), Brave Search ([`brave`]), remote MCP servers of both generations
//! ([`mcp_http`], [`mcp_modern`]) and the authorization server they send a client to ([`oauth`]), the AegisVM harness and a direct tether host ([`harness`]), with
//! what it and aegisd do for `host:` models ([`host_llm`]), OpenRouter ([`openrouter`]); helpers to
//! run the real binaries ([`proc`]) and a whole kit at once ([`stack`]), over a tiny raw
//! HTTP server ([`http`]), HTTPS through a TLS front ([`tls`]), a CONNECT
//! proxy ([`proxy`]) and a SOCKS5 one ([`socks`]); providers' prompt caches, to measure
//! what requests would read from them ([`prompt_cache`]).

pub mod aegisd;
pub mod agent;
pub mod bench;
pub mod brave;
pub mod harness;
pub mod host_llm;
pub mod http;
pub mod llm;
pub mod mcp_http;
pub mod mcp_modern;
pub mod oauth;
pub mod openai_audio;
pub mod openai_images;
pub mod openrouter;
pub mod proc;
pub mod prompt_cache;
pub mod proxy;
pub mod socks;
pub mod stack;
pub mod telegram;
pub mod tls;
