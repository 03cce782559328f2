//! MLLP framing and character sets over a real socket.

use std::time::Duration;

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const VT: u8 = 0x0b;
const FS: u8 = 0x1c;
const CR: u8 = 0x0d;

fn frame(msg: &[u8]) -> Vec<u8> {
    [&[VT][..], msg, &[FS, CR]].concat()
}

/// Reads whole frames from a raw stream until `n` arrived.
async fn read_frames(stream: &mut TcpStream, n: usize) -> Vec<Vec<u8>> {
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    let mut chunk = [0u8; 4096];
    while frames.len() < n {
        let read = tokio::time::timeout(TIMEOUT, stream.read(&mut chunk))
            .await
            .expect("answer in time")
            .unwrap();
        assert!(read > 0, "connection closed after {} frames", frames.len());
        buf.extend_from_slice(&chunk[..read]);
        while let (Some(start), Some(end)) = (
            buf.iter().position(|&b| b == VT),
            buf.windows(2).position(|w| w == [FS, CR]),
        ) {
            frames.push(buf[start + 1..end].to_vec());
            buf.drain(..end + 2);
        }
    }
    frames
}

fn vxu(id: &str) -> String {
    with_msh(
        &sample_text("messages/vxu/vxu-valid-testgood-01.hl7"),
        10,
        id,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_pipelined_and_junk_framed_messages_are_all_answered_in_order() {
    let h = harness("").await;
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    // One frame dribbled byte by byte.
    for b in frame(vxu("SPLIT-1").as_bytes()) {
        s.write_all(&[b]).await.unwrap();
    }
    let got = read_frames(&mut s, 1).await;
    assert_eq!(msa(&got[0]), ("AA".into(), "SPLIT-1".into()));
    // Three frames in one write, with junk before and between them.
    let mut burst = b"junk before".to_vec();
    burst.extend(frame(vxu("PIPE-1").as_bytes()));
    burst.extend(b"\r\nnoise");
    burst.extend(frame(vxu("PIPE-2").as_bytes()));
    burst.extend(frame(vxu("PIPE-3").as_bytes()));
    s.write_all(&burst).await.unwrap();
    let got = read_frames(&mut s, 3).await;
    let ids: Vec<String> = got.iter().map(|f| msa(f).1).collect();
    assert_eq!(ids, ["PIPE-1", "PIPE-2", "PIPE-3"]);
    let metrics = http_get(h.admin, "/metrics").await;
    assert!(
        metrics.contains("izhub_mllp_junk_bytes_total{listener=\"ehr\"} 16"),
        "{metrics}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_get_ar_or_a_close() {
    let h = harness("").await; // listener limit: 65536 bytes
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    let big = format!("{}\rNTE|1||{}", vxu("BIG-1"), "x".repeat(100_000));
    s.write_all(&frame(big.as_bytes())).await.unwrap();
    let got = read_frames(&mut s, 1).await;
    assert_eq!(msa(&got[0]), ("AR".into(), "BIG-1".into()));
    let err = segments(&got[0])
        .into_iter()
        .find(|x| x.starts_with("ERR"))
        .unwrap();
    assert!(err.contains("accepts at most 65536 bytes"), "{err}");
    // The connection stays usable after the oversized frame.
    s.write_all(&frame(vxu("AFTER-BIG").as_bytes()))
        .await
        .unwrap();
    assert_eq!(
        msa(&read_frames(&mut s, 1).await[0]),
        ("AA".into(), "AFTER-BIG".into())
    );
    assert_eq!(h.sim("MI").count("BIG-1"), 0);

    // Without a readable MSH there is nobody to answer: the connection is closed.
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    s.write_all(&frame(&vec![b'z'; 70_000])).await.unwrap();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(TIMEOUT, s.read_to_end(&mut rest))
        .await
        .expect("closed in time")
        .unwrap();
    assert_eq!(n, 0, "no answer is possible, so none is sent");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_without_a_readable_msh_close_the_connection() {
    let h = harness("").await;
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    s.write_all(&frame(b"this is not HL7")).await.unwrap();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(TIMEOUT, s.read_to_end(&mut rest))
        .await
        .expect("closed in time")
        .unwrap();
    assert_eq!(n, 0);
    // A readable MSH with an unknown message type gets AR 200.
    let mut client = h.client().await;
    let msg = with_msh(&vxu("ADT-1"), 9, "ADT^A01^ADT_A01");
    let answer = client.exchange(msg.as_bytes(), TIMEOUT).await.unwrap();
    let segs = segments(&answer);
    assert_eq!(msa(&answer).0, "AR", "{segs:?}");
    assert!(
        segs.iter()
            .any(|s| s.starts_with("ERR||MSH^1^9|200^Unsupported message type")),
        "{segs:?}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iso_8859_1_messages_are_decoded_and_delivered_in_their_charset() {
    let h = harness("").await;
    let text = with_msh(&with_msh(&vxu("LATIN-1"), 18, "8859/1"), 3, "EHR");
    let text = text.replace(
        "PID|||1||Redacted^Redacted^Redacted|",
        "PID|||LAT1||MÜLLER^JOSÉ^Redacted|",
    );
    assert!(text.contains("MÜLLER"));
    let (latin1, _, unmappable) = encoding_rs::WINDOWS_1252.encode(&text);
    assert!(!unmappable);
    assert!(
        std::str::from_utf8(&latin1).is_err(),
        "the bytes on the wire are not UTF-8"
    );
    let mut client = h.client().await;
    let answer = client.exchange(&latin1, TIMEOUT).await.unwrap();
    assert_eq!(msa(&answer), ("AA".into(), "LATIN-1".into()));
    // The IIS decoded the Latin-1 bytes it was sent into the right name.
    assert_eq!(
        h.sim("MI").patient_name("LAT1").as_deref(),
        Some("MÜLLER^JOSÉ^Redacted")
    );

    // The same bytes declared as UTF-8 (MSH-18 empty) are refused with a reason.
    let undeclared = text.replacen("|8859/1", "|", 1);
    let (bytes, _, _) = encoding_rs::WINDOWS_1252.encode(&undeclared);
    let answer = client.exchange(&bytes, TIMEOUT).await.unwrap();
    let segs = segments(&answer);
    assert_eq!(msa(&answer).0, "AR", "{segs:?}");
    assert!(
        segs.iter()
            .any(|s| s.starts_with("ERR||MSH^1^18|102^") && s.contains("not valid UTF-8")),
        "{segs:?}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lenient_listener_accepts_fs_without_cr() {
    let sim = start_sim(sim_named("MIIIS")).await;
    let (engine, _dir) = engine_from(&simple_config(sim.addr, "lenient_framing = true")).await;
    let mut s = TcpStream::connect(engine.listeners["ehr"]).await.unwrap();
    let mut bytes = vec![VT];
    bytes.extend(vxu("LENIENT-1").as_bytes());
    bytes.push(FS);
    s.write_all(&bytes).await.unwrap();
    let got = read_frames(&mut s, 1).await;
    assert_eq!(msa(&got[0]), ("AA".into(), "LENIENT-1".into()));
    tokio::time::sleep(Duration::from_millis(10)).await;
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_headers_and_segments_get_ar_saying_why() {
    let h = harness("").await;
    let mut client = h.client().await;
    for (msg, expect) in [
        (
            with_msh(&vxu("X"), 10, ""),
            "ERR||MSH^1^10|101^Required field missing^HL70357|E||||MSH-10 (message control id) is empty",
        ),
        (
            with_msh(&vxu("NO-TYPE"), 9, ""),
            "ERR||MSH^1^9|101^Required field missing^HL70357|E||||MSH-9 (message type",
        ),
        (
            format!(
                "{}\r@@@ not a segment\rOBX|1",
                vxu("BAD-SEG").trim_end_matches('\r')
            ),
            "ERR|||102^Data type error^HL70357|E||||segment 7 ('@@@ not a se",
        ),
    ] {
        let answer = client.exchange(msg.as_bytes(), TIMEOUT).await.unwrap();
        let segs = segments(&answer);
        assert_eq!(msa(&answer).0, "AR", "{segs:?}");
        assert!(
            segs.iter().any(|s| s.starts_with(expect)),
            "expected {expect}\n{segs:?}"
        );
    }
    assert_eq!(h.sim("MI").received(), 0);
    h.stop().await;
}
