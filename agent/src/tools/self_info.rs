//! `self_info`: what the host knows of this instance (id, handle, state, image, exposed
//! ports), as upstream's agent reports it. In harness mode it is the guest API's
//! `GET /v1/self` (which the harness answers with aegisd's `guest.self_info`); on a direct
//! tether the agent sends that JSON-RPC request itself, as the harness does to aegisd.

use std::time::Duration;

use crate::uplink::Uplink;

/// Longest wait for the host's answer.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read.
const MAX_BODY: u64 = 64 * 1024;

/// The host's description of this instance, as JSON text for the model.
pub fn fetch(host: &Uplink) -> Result<String, String> {
    match host {
        Uplink::Tether(link) => link
            .call("guest.self_info", &serde_json::json!({}), TIMEOUT)
            .map(|info| info.get().to_string()),
        Uplink::Harness(base) => {
            let url = format!("{base}/v1/self");
            let agent: ureq::Agent = tether::http::agent_config(&url)
                .http_status_as_error(false)
                .timeout_global(Some(TIMEOUT))
                .max_idle_connections(0)
                .build()
                .into();
            let resp = agent
                .get(&url)
                .call()
                .map_err(|e| format!("the host did not answer: {e}"))?;
            let status = resp.status().as_u16();
            if status == 404 {
                return Err("this host does not give instance information (HTTP 404)".into());
            }
            if status != 200 {
                let text = tether::http::error_text(resp);
                return Err(format!("the host refused (HTTP {status}): {}", text.trim()));
            }
            resp.into_body()
                .into_with_config()
                .limit(MAX_BODY)
                .read_to_string()
                .map_err(|e| format!("reading the host's answer failed: {e}"))
        }
    }
}
