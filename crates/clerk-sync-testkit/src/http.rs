//! Requests to a gateway, signed as Svix signs them.

use secrecy::SecretString;

/// A POST of `body` to `url`, signed with `secret` for svix-id `id` at `ts` (unix seconds). Send
/// it, or add to it first.
pub fn signed_post(
    client: &reqwest::Client,
    url: &str,
    secret: &SecretString,
    id: &str,
    ts: i64,
    body: &[u8],
) -> reqwest::RequestBuilder {
    let signature = clerk_sync_core::signing::sign(secret, id, ts, body).expect("a valid signing secret");
    client
        .post(url)
        .header("svix-id", id)
        .header("svix-timestamp", ts.to_string())
        .header("svix-signature", signature)
        .body(body.to_vec())
}
