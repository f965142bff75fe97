//! Reading the gateway's HTTP answers the way every API test does.

use serde_json::Value;

/// The answer's Content-Type, empty when it has none.
pub fn content_type(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// Status and JSON body of a REST answer, asserting that errors are problem+json.
pub async fn api_answer(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let ct = content_type(&resp);
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if status >= 400 {
        assert_eq!(
            ct, "application/problem+json",
            "errors are problem+json: {v}"
        );
    }
    (status, v)
}
