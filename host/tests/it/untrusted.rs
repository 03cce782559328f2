//! What comes out of a plugin is untrusted input: replaced text is checked
//! before it goes anywhere, every text written into an ACK is escaped and
//! stripped of control bytes, the sender is always answered with its own
//! MSH-10, a plugin routes only where its route grants, and metric labels do
//! not grow with message content.

use crate::common::*;

/// A valid VXU from `sender` with MSH-10 `id` (a Michigan patient).
fn vxu_from(sender: &str, id: &str) -> String {
    let base = sample_text("messages/vxu/vxu-valid-testgood-01.hl7");
    with_msh(&with_msh(&base, 4, sender), 10, id)
}

/// The answer has no MLLP framing bytes inside it and no other control
/// bytes besides the segment separator.
fn assert_clean(answer: &[u8]) {
    let bad: Vec<(usize, u8)> = answer
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, b)| (*b < 0x20 && *b != b'\r') || *b == 0x7f)
        .collect();
    assert!(
        bad.is_empty(),
        "control bytes in the answer at {bad:?}: {:?}",
        String::from_utf8_lossy(answer)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_text_with_framing_bytes_never_reaches_the_iis() {
    let h = harness("").await;
    let mut client = h.client().await;
    let answer = client
        .exchange(vxu_from("INJECT", "INJ-1").as_bytes(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(msa(&answer), ("AE".into(), "INJ-1".into()));
    let text = segments(&answer).join("\n");
    assert!(
        text.contains("plugin 'test_misbehave' returned a message that cannot be sent on: it holds the control character U+001C"),
        "{text}"
    );
    assert!(
        text.contains("|207^Application internal error^HL70357|E|"),
        "{text}"
    );
    assert_clean(&answer);
    assert_eq!(h.sim("MI").count("INJ-1"), 0);
    assert_eq!(h.sim("MI").count("INJECTED-1"), 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_bytes_in_plugin_issues_are_stripped_from_the_ack() {
    let h = harness("").await;
    let mut client = h.client().await;
    let answer = client
        .exchange(vxu_from("CTRL", "CTRL-1").as_bytes(), TIMEOUT)
        .await
        .unwrap();
    assert_clean(&answer);
    let (code, acked) = msa(&answer);
    assert_eq!((code.as_str(), acked.as_str()), ("AA", "CTRL-1"));
    let err = segments(&answer)
        .into_iter()
        .find(|s| s.starts_with("ERR") && s.contains("framing"))
        .unwrap_or_else(|| panic!("{:?}", segments(&answer)));
    // ERR-2 is an ERL with the field's repetition.
    assert!(err.starts_with("ERR||PID^1^3^2^5|103 ^"), "{err}");
    assert!(err.ends_with("|||framing     inside"), "{err}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sender_is_answered_with_its_own_msh10_when_a_plugin_renumbers() {
    let h = harness("").await;
    let mut client = h.client().await;
    let answer = client
        .exchange(vxu_from("RENUMBER", "ORIG-7").as_bytes(), TIMEOUT)
        .await
        .unwrap();
    // The IIS got (and answered) the renumbered message; the sender's answer
    // names the message it sent.
    assert_eq!(h.sim("MI").count("RENUMBERED-ORIG-7"), 1);
    assert_eq!(h.sim("MI").count("ORIG-7"), 0);
    assert_eq!(msa(&answer), ("AA".into(), "ORIG-7".into()));
    // Still the IIS's own answer.
    assert_eq!(segments(&answer)[0].split('|').nth(3), Some("MIIIS"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_cannot_route_outside_its_routes_grant() {
    let h = harness("").await;
    let mut client = h.client().await;
    let answer = client
        .exchange(vxu_from("ELSEWHERE", "ELS-1").as_bytes(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(msa(&answer), ("AE".into(), "ELS-1".into()));
    let text = segments(&answer).join("\n");
    assert!(
        text.contains("routed the message to 'pa-iis', which route 'route-to:pa-iis-ELSEWHERE' does not grant (route_to: mi-iis)"),
        "{text}"
    );
    assert_eq!(h.sim("PA").count("ELS-1"), 0);
    assert_eq!(h.sim("MI").count("ELS-1"), 0);
    h.stop().await;
}

#[tokio::test]
async fn check_refuses_a_plugin_set_up_for_a_destination_its_route_does_not_grant() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("izhub.toml");
    std::fs::write(
        &path,
        format!(
            "[listeners.ehr]\nlisten = \"127.0.0.1:0\"\n\n[destinations.ma-iis]\nmllp = \"127.0.0.1:1\"\n\n[destinations.pa-iis]\nmllp = \"127.0.0.1:2\"\n\n[[routes]]\nname = \"ma-only\"\nroute_to = [\"ma-iis\"]\n\n[[routes.plugins]]\nwasm = \"{}\"\n[routes.plugins.config.states]\nMA = \"ma-iis\"\nPA = \"pa-iis\"\n",
            plugin("route_by_jurisdiction")
        ),
    )
    .unwrap();
    let errs = izhub::config::load(&path).unwrap_err().to_string();
    assert!(
        errs.contains("routes[0].plugins[0].config.states.PA: names destination 'pa-iis', which this route's route_to does not grant (route_to: ma-iis)"),
        "{errs}"
    );
}

/// 10,000 distinct sending facilities on an any-sender listener: the
/// sender label keeps the facility the configuration names and counts the
/// rest as `other`, so /metrics stays small.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_labels_do_not_grow_with_senders() {
    let sim = start_sim(sim_named("MIIIS")).await;
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n{}\n[[routes]]\nname = \"named\"\nsenders = [\"CLINIC-NAMED\"]\ndestinations = [\"mi\"]\n",
        simple_config(sim.addr, "")
    );
    let (engine, _dir) = engine_from(&config).await;
    let addr = engine.listeners["ehr"].to_string();
    let mut tasks = Vec::new();
    for c in 0..4 {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = izhub::mllp::MllpClient::connect(&addr, TIMEOUT, 1 << 20)
                .await
                .unwrap();
            for i in 0..2500 {
                let sender = format!("CLINIC-{c}-{i}");
                let answer = client
                    .exchange(vxu_from(&sender, &format!("L{c}-{i}")).as_bytes(), TIMEOUT)
                    .await
                    .unwrap();
                assert_eq!(msa(&answer).0, "AA");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut client = connect(&engine, "ehr").await;
    let answer = client
        .exchange(vxu_from("CLINIC-NAMED", "NAMED-1").as_bytes(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(msa(&answer).0, "AA");
    let metrics = http_get(engine.admin.unwrap(), "/metrics").await;
    assert!(
        metrics.contains(
            "izhub_iis_answers_total{destination=\"mi\",sender=\"other\",class=\"accepted\"} 10000"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("sender=\"CLINIC-NAMED\""), "{metrics}");
    assert!(!metrics.contains("CLINIC-0-"), "content became a label");
    assert!(
        metrics.len() < 16 * 1024,
        "/metrics is {} bytes",
        metrics.len()
    );
    engine.stop().await;
}
