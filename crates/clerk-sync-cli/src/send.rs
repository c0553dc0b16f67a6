//! `clerk-sync send`: the way to try the pipeline locally in one line. Signs a realistic sample
//! event (or a file) exactly as Svix would and posts it to a gateway.

use clerk_sync_core::samples;
use clerk_sync_core::settings::Settings;
use clerk_sync_core::signing;
use clerk_sync_store::catalogue;
use serde_json::json;

use crate::cli::SendArgs;
use crate::output::{self, Output};

pub async fn send(settings: &Settings, args: &SendArgs, out: Output) -> anyhow::Result<()> {
    if args.list {
        if out.json {
            output::print_json(&json!(catalogue::names().collect::<Vec<_>>()));
        } else {
            catalogue::names().for_each(|t| println!("{t}"));
        }
        return Ok(());
    }
    let now = chrono::Utc::now();
    let body = match (&args.event_type, &args.file) {
        (_, Some(path)) => std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?,
        (t, None) => {
            let t = t.as_deref().unwrap_or("user.created");
            catalogue::find(t)
                .and_then(|t| samples::sample(t.name, now.timestamp_millis()))
                .ok_or_else(|| anyhow::anyhow!("no sample for {t:?}; `clerk-sync send --list` shows the types"))?
                .to_string()
                .into_bytes()
        }
    };
    let secret = settings
        .webhook
        .signing_secrets
        .first()
        .ok_or_else(|| anyhow::anyhow!("no signing secret: set CLERK_WEBHOOK_SIGNING_SECRET"))?;
    let id = args.id.clone().unwrap_or_else(|| format!("msg_cli_{}", now.timestamp_nanos_opt().unwrap_or_default()));
    let ts = now.timestamp();
    let signature = signing::sign(secret, &id, ts, &body)?;
    let url = args.url.clone().unwrap_or_else(|| {
        let listen = settings.gateway.listen;
        let host = if listen.ip().is_unspecified() { "127.0.0.1".to_owned() } else { listen.ip().to_string() };
        format!("http://{host}:{}/webhooks/clerk", listen.port())
    });
    let response = reqwest::Client::new()
        .post(&url)
        .header("svix-id", &id)
        .header("svix-timestamp", ts.to_string())
        .header("svix-signature", signature)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the gateway at {url}: {e}"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if out.json {
        let body: serde_json::Value = serde_json::from_str(&text).unwrap_or(json!(text));
        output::print_json(&json!({"url": url, "svix_id": id, "status": status.as_u16(), "response": body}));
    } else {
        println!("POST {url} (svix-id {id})");
        println!("{status}");
        println!("{text}");
    }
    anyhow::ensure!(status.is_success(), "the gateway answered {status}");
    Ok(())
}
