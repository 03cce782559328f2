//! Parse once for the whole route: the engine passes every plugin built with
//! the SDK the offsets of the message's separators (`process-split`), and a
//! plugin given them answers exactly as one that reads the text itself.

use std::path::Path;

use izhub::plugin::{Envelope, Runtime, RuntimeOptions};
use izhub::tools::plugin_dev::{TestSetup, load_for_test};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_given_the_layout_answer_as_plugins_that_parse() {
    // The large language-runtime components compile once and are cached
    // (as in `guests`).
    let runtime = Runtime::new(RuntimeOptions {
        cache_dir: std::env::var_os("HOME")
            .map(|h| std::path::PathBuf::from(h).join(".cache/izhub/test-components")),
        ..Default::default()
    })
    .unwrap();
    let setup = TestSetup {
        config: vec![
            ("states.MA".into(), "ma-iis".into()),
            ("states.PA".into(), "pa-iis".into()),
            ("organization".into(), "Demo HIE^^^^^^^^^HIE01".into()),
        ],
        codesets: Some(root().join("samples/codesets")),
        ..TestSetup::default()
    };
    let mut messages: Vec<_> = std::fs::read_dir(root().join("samples/messages/vxu"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    messages.sort();
    assert!(messages.len() >= 20, "{messages:?}");
    let mut compared = 0;
    // Every SDK plugin the tests build, but the hostile test plugins.
    let sdk = BUILT
        .into_iter()
        .filter(|n| !n.starts_with("test_") && !["python_stamp", "js_stamp"].contains(n));
    for name in sdk {
        let plugin = load_for_test(&runtime, Path::new(&plugin(name)), &setup).unwrap();
        assert!(plugin.takes_layout(), "{name} is built with the SDK");
        for path in &messages {
            let raw = std::fs::read(path).unwrap();
            let (text, _) = izhub::hl7::decode(&raw).unwrap();
            let text = izhub::hl7::normalize_segments(&text).into_owned();
            let layout = izhub::hl7::layout(&text).expect("a layout");
            let env = |layout| Envelope {
                id: "m-1",
                route: "vxu",
                source: "clinics",
                received_at: "2026-01-01T00:00:00.000Z",
                hl7: &text,
                attributes: &[],
                layout,
            };
            let split = runtime.call(&plugin, &env(&layout)).await;
            let parsed = runtime.call(&plugin, &env(&[])).await;
            match (&split, &parsed) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{name} on {}", path.display()),
                (a, b) => assert_eq!(
                    a.as_ref().map_err(ToString::to_string),
                    b.as_ref().map_err(ToString::to_string),
                    "{name} on {}",
                    path.display()
                ),
            }
            compared += 1;
        }
    }
    assert!(compared >= 120);
    // A plugin in another language has no process-split: it is called the
    // plain way.
    for name in ["js_stamp", "python_stamp"] {
        let setup = TestSetup {
            grants: vec![
                "link:wasi:filesystem".into(),
                "link:wasi:clocks".into(),
                "link:wasi:sockets".into(),
            ],
            ..TestSetup::default()
        };
        let p = load_for_test(&runtime, Path::new(&plugin(name)), &setup).unwrap();
        assert!(!p.takes_layout(), "{name}");
    }
}

#[test]
fn the_layout_is_every_field_separator_and_carriage_return() {
    let text = "MSH|^~\\&|A|B\rPID|1||X^^^Y~Z\rRXA|0|1\r";
    let layout = izhub::hl7::layout(text).unwrap();
    let naive: Vec<u32> = text
        .bytes()
        .enumerate()
        .filter(|&(_, b)| b == b'|' || b == b'\r')
        .map(|(i, _)| i as u32)
        .collect();
    assert_eq!(layout, naive);
    let other = "MSH#^~\\&#A\rPID#1|x";
    assert_eq!(izhub::hl7::layout(other).unwrap(), [3, 8, 10, 14]);
    for none in ["MSH|a\nPID|1", "PID|1", "MSH", "MSH\r|", "MSHé|"] {
        assert_eq!(izhub::hl7::layout(none), None, "{none:?}");
    }
}
