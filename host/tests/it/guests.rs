//! Plugins written in Python (componentize-py) and JavaScript (componentize-js),
//! built by `./dev.sh test`, running end to end through the engine next to
//! the Rust version of the same plugin.

use crate::common::*;
use izhub::serve::{self, ServeOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_javascript_plugins_run_in_a_route() {
    let sim = start_sim(sim_named("MIIIS")).await;
    let mut cfg = format!(
        "[listeners.ehr]\nlisten = \"127.0.0.1:0\"\n\n[destinations.mi]\nmllp = \"{}\"\n",
        sim.addr
    );
    for (sender, wasm, grants) in [
        ("RUST", "stamp_hie", ""),
        // CPython links files, sockets and clocks; linked, they still give no access.
        (
            "PY",
            "python_stamp",
            "grants = [\"config\", \"link:wasi:filesystem\", \"link:wasi:sockets\", \"link:wasi:clocks\"]\n",
        ),
        ("JS", "js_stamp", ""),
    ] {
        cfg += &format!(
            "\n[[routes]]\nname = \"{sender}\"\nsenders = [\"{sender}\"]\ndestinations = [\"mi\"]\n\n[[routes.plugins]]\nwasm = \"{}\"\n{grants}[routes.plugins.config]\norganization = \"{sender} HIE\"\n",
            plugin(wasm)
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("izhub.toml");
    std::fs::write(&path, cfg).unwrap();
    let config = izhub::config::load(&path).unwrap();
    // The large language-runtime components compile once and are cached.
    let cache = std::env::var_os("HOME")
        .map(|h| std::path::PathBuf::from(h).join(".cache/izhub/test-components"));
    let opts = ServeOptions {
        runtime: izhub::plugin::RuntimeOptions {
            cache_dir: cache,
            ..Default::default()
        },
        watch: None,
    };
    let engine = serve::start_with(&config, opts).await.unwrap();
    let mut client = connect(&engine, "ehr").await;
    let base = with_msh(
        &sample_text("messages/vxu/vxu-valid-testgood-01.hl7"),
        22,
        "",
    );
    for sender in ["RUST", "PY", "JS"] {
        let id = format!("GUEST-{sender}");
        let msg = with_msh(&with_msh(&base, 4, sender), 10, &id);
        for round in 0..3 {
            let answer = client.exchange(msg.as_bytes(), TIMEOUT).await.unwrap();
            assert_eq!(
                msa(&answer),
                ("AA".to_string(), id.clone()),
                "{sender} round {round}: {:?}",
                segments(&answer)
            );
        }
        let header = sim.state.header(&id).expect("delivered");
        let fields: Vec<&str> = header.split('|').collect();
        assert_eq!(
            fields.get(21).copied(),
            Some(format!("{sender} HIE").as_str()),
            "{sender}: {header}"
        );
        assert_eq!(
            fields.get(3).copied(),
            Some(sender),
            "{sender}: MSH-4 unchanged"
        );
        assert_eq!(sim.state.count(&id), 3);
    }
    engine.stop().await;
}
