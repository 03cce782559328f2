//! Message bodies (what was received, what each plugin did, the answer),
//! appended to segment files in a folder beside the message log rather than
//! stored in its SQLite file. A body is written once, with one `write` per
//! batch; in the SQLite file it would also be copied into the WAL,
//! checksummed, split over overflow pages and copied again at each
//! checkpoint, which made it most of the log's cost. The log's rows point
//! into the segments (`body_ref`, `body_len`); a segment is deleted once the
//! pruning has removed every row that points into it.
//!
//! A segment is `NNNNNNNNNN.body`; each body in it is a header (magic, the
//! message's id, the parts' lengths) and the parts: what was received, the
//! stages, the issues and the answer sent back, then (`IZB2`, not in bodies
//! written as `IZB1`) the relay-mode delivery attempt: the IIS's own answer
//! when the engine changed it before sending it back, and the attempt's
//! metadata as the log wrote it. A reader checks
//! the magic, the id and the lengths, so a body that is missing or torn
//! (the file is not synced: after a crash of the machine, not of the engine,
//! the newest bodies may be lost) reads as missing, never as another
//! message's.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A segment is closed and the next one started beyond this size.
const SEGMENT_BYTES: u64 = 64 << 20;
/// Bodies with six parts; the ones written before have four.
const MAGIC: &[u8; 4] = b"IZB2";
const MAGIC_FOUR_PARTS: &[u8; 4] = b"IZB1";
const PARTS: usize = 6;
/// Magic, id, six lengths.
const HEADER: usize = 4 + 8 + 4 * PARTS;
/// The shortest header (four lengths).
const MIN_HEADER: usize = 4 + 8 + 4 * 4;
/// A body bigger than this is not read back (none is written: messages and
/// answers are bounded far below it).
const MAX_BODY: u64 = 1 << 30;

/// One message's body.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Body {
    pub received: Vec<u8>,
    pub stages: String,
    pub issues: String,
    pub answer: Vec<u8>,
    /// The IIS's answer to the relay-mode delivery, when the answer sent
    /// back is not that answer unchanged; else empty.
    pub iis_answer: Vec<u8>,
    /// The relay-mode delivery attempt, as the log wrote it; else empty.
    pub attempt: Vec<u8>,
}

/// A body to write: [`Body`]'s parts, borrowed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Parts<'a> {
    pub received: &'a [u8],
    pub stages: &'a str,
    pub issues: &'a str,
    pub answer: &'a [u8],
    pub iis_answer: &'a [u8],
    pub attempt: &'a [u8],
}

/// Where a body is: its segment and offset (`segment << 32 | offset`) and
/// its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyRef {
    pub at: i64,
    pub len: i64,
}

impl BodyRef {
    fn segment(self) -> u64 {
        (self.at as u64) >> 32
    }

    fn offset(self) -> u64 {
        (self.at as u64) & 0xffff_ffff
    }
}

/// The folder of a log's bodies: `messages.db` → `messages.db-bodies`.
pub fn dir_of(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push("-bodies");
    PathBuf::from(name)
}

fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:010}.body"))
}

/// The segment numbers of the files in `dir`.
fn segments_in(dir: &Path) -> std::io::Result<BTreeSet<u64>> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".body"))
            .filter(|n| n.len() == 10)
            .and_then(|n| n.parse::<u64>().ok())
        {
            out.insert(n);
        }
    }
    Ok(out)
}

/// Creates `dir` (0700) if it is not there.
pub fn make_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if !dir.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

/// Deletes the segments in `dir` that `known` does not list: written by a
/// batch that was never committed, or left by a log file deleted since.
/// Returns the highest segment number found, listed or not.
pub fn tidy(dir: &Path, known: &BTreeSet<u64>) -> std::io::Result<u64> {
    let found = segments_in(dir)?;
    for seg in found.difference(known) {
        std::fs::remove_file(segment_path(dir, *seg))?;
    }
    Ok(found
        .last()
        .copied()
        .max(known.last().copied())
        .unwrap_or(0))
}

/// Removes segment `segment`'s file (pruned).
pub fn remove(dir: &Path, segment: u64) -> std::io::Result<()> {
    match std::fs::remove_file(segment_path(dir, segment)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Appends bodies; owned by the log's writer thread.
pub struct Writer {
    dir: PathBuf,
    /// The segment being written and its length on disk.
    segment: u64,
    file: Option<File>,
    len: u64,
    /// Bodies of the batch, written by [`Writer::flush`].
    pending: Vec<u8>,
    /// Segments this batch wrote into, with the highest id in each.
    touched: Vec<(u64, i64)>,
}

impl Writer {
    /// A writer that starts a new segment after `last`.
    pub fn new(dir: PathBuf, last: u64) -> Self {
        Writer {
            dir,
            segment: last,
            file: None,
            len: 0,
            pending: Vec::new(),
            touched: Vec::new(),
        }
    }

    /// The folder written into.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The segment being written (kept by pruning).
    pub fn current(&self) -> u64 {
        self.segment
    }

    /// Queues message `id`'s body; written by the next [`Writer::flush`].
    pub fn append(&mut self, id: i64, body: &Parts<'_>) -> std::io::Result<BodyRef> {
        let parts: [&[u8]; PARTS] = [
            body.received,
            body.stages.as_bytes(),
            body.issues.as_bytes(),
            body.answer,
            body.iis_answer,
            body.attempt,
        ];
        let size = HEADER + parts.iter().map(|p| p.len()).sum::<usize>();
        let mut lens = [0u32; PARTS];
        for (l, p) in lens.iter_mut().zip(parts) {
            *l = u32::try_from(p.len()).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "a body part over 4 GB")
            })?;
        }
        let used = self.len + self.pending.len() as u64;
        if self.file.is_none() || (used > 0 && used + size as u64 > SEGMENT_BYTES) {
            self.flush()?;
            self.open_next()?;
        }
        let offset = self.len + self.pending.len() as u64;
        self.pending.extend_from_slice(MAGIC);
        self.pending.extend_from_slice(&id.to_le_bytes());
        for l in lens {
            self.pending.extend_from_slice(&l.to_le_bytes());
        }
        for p in parts {
            self.pending.extend_from_slice(p);
        }
        match self.touched.last_mut() {
            Some((seg, max)) if *seg == self.segment => *max = (*max).max(id),
            _ => self.touched.push((self.segment, id)),
        }
        Ok(BodyRef {
            at: ((self.segment << 32) | offset) as i64,
            len: size as i64,
        })
    }

    /// Writes the queued bodies (before the batch's rows are committed).
    pub fn flush(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let Some(file) = self.file.as_mut() else {
            return Err(std::io::Error::other("no body segment is open"));
        };
        let written = file.write_all(&self.pending);
        // On a failed write the segment's length is unknown: the next body
        // goes into a new one.
        if written.is_err() {
            self.file = None;
        }
        written?;
        self.len += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    /// The segments written since the last call, with their highest ids.
    pub fn take_touched(&mut self) -> Vec<(u64, i64)> {
        std::mem::take(&mut self.touched)
    }

    /// Forgets what was queued and not written (the batch failed).
    pub fn discard(&mut self) {
        self.pending.clear();
        self.touched.clear();
    }

    fn open_next(&mut self) -> std::io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.append(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        loop {
            self.segment += 1;
            match options.open(segment_path(&self.dir, self.segment)) {
                Ok(f) => {
                    self.file = Some(f);
                    self.len = 0;
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Reads message `id`'s body, `None` when it is missing or not whole.
pub fn read(dir: &Path, at: BodyRef, id: i64) -> std::io::Result<Option<Body>> {
    let len = u64::try_from(at.len).unwrap_or(0);
    if !(MIN_HEADER as u64..=MAX_BODY).contains(&len) {
        return Ok(None);
    }
    let file = match File::open(segment_path(dir, at.segment())) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut buf = vec![0u8; len as usize];
    match read_at(&file, &mut buf, at.offset()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    Ok(decode(&buf, id))
}

fn decode(buf: &[u8], id: i64) -> Option<Body> {
    let count = match buf.get(..4)? {
        m if m == MAGIC => PARTS,
        m if m == MAGIC_FOUR_PARTS => 4,
        _ => return None,
    };
    let (head, mut rest) = buf.split_at_checked(4 + 8 + 4 * count)?;
    if head.get(4..12)? != id.to_le_bytes() {
        return None;
    }
    let mut parts: Vec<Vec<u8>> = Vec::with_capacity(count);
    for k in 0..count {
        let l = head.get(12 + 4 * k..16 + 4 * k)?;
        let l = u32::from_le_bytes(l.try_into().ok()?) as usize;
        let (part, more) = rest.split_at_checked(l)?;
        parts.push(part.to_vec());
        rest = more;
    }
    if !rest.is_empty() {
        return None;
    }
    let mut parts = parts.into_iter();
    Some(Body {
        received: parts.next()?,
        stages: String::from_utf8(parts.next()?).ok()?,
        issues: String::from_utf8(parts.next()?).ok()?,
        answer: parts.next()?,
        iis_answer: parts.next().unwrap_or_default(),
        attempt: parts.next().unwrap_or_default(),
    })
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, offset)
}

#[cfg(not(unix))]
fn read_at(mut file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_read_back_and_torn_ones_read_as_missing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("m.db-bodies");
        make_dir(&dir).unwrap();
        let mut w = Writer::new(dir.clone(), tidy(&dir, &BTreeSet::new()).unwrap());
        let a = w
            .append(
                7,
                &Parts {
                    received: b"MSH|a\r",
                    stages: "[]",
                    answer: b"MSA|AA\r",
                    ..Parts::default()
                },
            )
            .unwrap();
        let b = w
            .append(
                8,
                &Parts {
                    received: b"MSH|b\r",
                    stages: "[{}]",
                    issues: "x",
                    answer: b"MSA|AA\rERR\r",
                    iis_answer: b"MSA|AA\r",
                    attempt: b"{}",
                },
            )
            .unwrap();
        // Not written yet: missing, not garbage.
        assert_eq!(read(&dir, a, 7).unwrap(), None);
        w.flush().unwrap();
        assert_eq!(w.take_touched(), vec![(1, 8)]);
        let got = read(&dir, b, 8).unwrap().unwrap();
        assert_eq!(got.received, b"MSH|b\r");
        assert_eq!((got.stages.as_str(), got.issues.as_str()), ("[{}]", "x"));
        assert_eq!(
            (got.answer.as_slice(), got.iis_answer.as_slice()),
            (b"MSA|AA\rERR\r".as_slice(), b"MSA|AA\r".as_slice())
        );
        assert_eq!(got.attempt, b"{}");
        assert_eq!(read(&dir, a, 7).unwrap().unwrap().answer, b"MSA|AA\r");
        // Another message's id, a length past the end, a cut header.
        assert_eq!(read(&dir, a, 8).unwrap(), None);
        assert_eq!(
            read(
                &dir,
                BodyRef {
                    len: a.len + 100,
                    ..a
                },
                7
            )
            .unwrap(),
            None
        );
        assert_eq!(read(&dir, BodyRef { len: 3, ..a }, 7).unwrap(), None);
        assert_eq!(
            read(
                &dir,
                BodyRef {
                    len: a.len - 1,
                    ..a
                },
                7
            )
            .unwrap(),
            None
        );
        assert_eq!(read(&dir, BodyRef { at: 9 << 32, ..a }, 7).unwrap(), None);
        // A reopened writer starts a new segment; unlisted segments go.
        let known: BTreeSet<u64> = [1].into();
        let mut w2 = Writer::new(dir.clone(), tidy(&dir, &known).unwrap());
        let c = w2
            .append(
                9,
                &Parts {
                    received: b"MSH|c\r",
                    ..Parts::default()
                },
            )
            .unwrap();
        w2.flush().unwrap();
        assert_eq!(c.segment(), 2);
        assert_eq!(tidy(&dir, &known).unwrap(), 2);
        assert_eq!(read(&dir, c, 9).unwrap(), None);
        assert_eq!(read(&dir, b, 8).unwrap().unwrap().received, b"MSH|b\r");
    }

    #[test]
    fn bodies_of_four_parts_still_read() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("m.db-bodies");
        make_dir(&dir).unwrap();
        // A body as written before the fifth part: IZB1, four lengths.
        let mut old = b"IZB1".to_vec();
        old.extend_from_slice(&5i64.to_le_bytes());
        for l in [6u32, 2, 0, 7] {
            old.extend_from_slice(&l.to_le_bytes());
        }
        old.extend_from_slice(b"MSH|a\r[]MSA|AA\r");
        std::fs::write(segment_path(&dir, 1), &old).unwrap();
        let at = BodyRef {
            at: 1 << 32,
            len: old.len() as i64,
        };
        let got = read(&dir, at, 5).unwrap().unwrap();
        assert_eq!(got.received, b"MSH|a\r");
        assert_eq!(got.answer, b"MSA|AA\r");
        assert!(got.iis_answer.is_empty() && got.attempt.is_empty());
        // Its lengths must still add up.
        assert_eq!(
            read(
                &dir,
                BodyRef {
                    len: at.len - 1,
                    ..at
                },
                5
            )
            .unwrap(),
            None
        );
        // A magic of neither kind reads as missing.
        old[3] = b'9';
        std::fs::write(segment_path(&dir, 1), &old).unwrap();
        assert_eq!(read(&dir, at, 5).unwrap(), None);
    }
}
