//! Reading a clinic's message files: one message per file or many (each
//! starting with MSH, as in an HL7 batch file whose FHS/BHS/BTS/FTS lines are
//! skipped), with LF, CRLF or CR line ends and stray MLLP framing bytes.

use std::path::{Path, PathBuf};

/// Largest file read (a clinic's export, not a database dump).
pub const MAX_FILE_BYTES: u64 = 256 << 20;
/// How deep directories are searched.
const MAX_DEPTH: usize = 16;

/// One message of a file: the line its first segment starts on, and its
/// text with CR segment ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// 1-based line number in the file.
    pub line: usize,
    /// The message, segments ending in CR.
    pub text: Vec<u8>,
}

/// The files named, with directories searched (sorted, hidden entries
/// skipped) for `*.hl7` and `*.txt`. A named file is taken whatever its name.
pub fn collect_files(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for input in inputs {
        let meta =
            std::fs::metadata(input).map_err(|e| anyhow::anyhow!("{}: {e}", input.display()))?;
        if meta.is_dir() {
            walk(input, 0, &mut out)?;
        } else {
            out.push(input.clone());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.'))
        })
        .collect();
    entries.sort();
    for path in entries {
        // Symbolic links are not followed into directories (no loops).
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            walk(&path, depth + 1, out)?;
        } else if meta.is_file() && is_message_file(&path) {
            out.push(path);
        }
    }
    Ok(())
}

fn is_message_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("hl7") || e.eq_ignore_ascii_case("txt"))
}

/// Reads a file and splits it into messages.
pub fn read_pieces(path: &Path) -> anyhow::Result<Vec<Piece>> {
    let meta = std::fs::metadata(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if meta.len() > MAX_FILE_BYTES {
        anyhow::bail!(
            "{}: {} bytes is more than the {} MiB a file may have; split it",
            path.display(),
            meta.len(),
            MAX_FILE_BYTES >> 20
        );
    }
    let raw =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", path.display()))?;
    Ok(split(&raw))
}

/// Splits file contents into messages. Text before the first MSH (other
/// than batch headers) becomes a piece of its own, so it is reported rather
/// than lost.
pub fn split(raw: &[u8]) -> Vec<Piece> {
    let mut pieces: Vec<Piece> = Vec::new();
    let mut current: Option<Piece> = None;
    let mut line = 0;
    let mut rest = raw;
    while !rest.is_empty() {
        line += 1;
        let end = rest
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .unwrap_or(rest.len());
        let (segment, tail) = rest.split_at(end);
        rest = match tail {
            [b'\r', b'\n', more @ ..] => more,
            [_, more @ ..] => more,
            [] => &[],
        };
        let segment: Vec<u8> = segment
            .iter()
            .copied()
            .filter(|&b| b != 0x0b && b != 0x1c)
            .collect();
        let trimmed = segment.trim_ascii();
        if trimmed.is_empty()
            || [b"FHS", b"BHS", b"BTS", b"FTS"]
                .iter()
                .any(|h| trimmed.starts_with(*h))
        {
            continue;
        }
        if trimmed.starts_with(b"MSH") {
            pieces.extend(current.take());
            current = Some(Piece {
                line,
                text: Vec::new(),
            });
        }
        let piece = current.get_or_insert_with(|| Piece {
            line,
            text: Vec::new(),
        });
        piece.text.extend_from_slice(trimmed);
        piece.text.push(b'\r');
    }
    pieces.extend(current);
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_batches_and_line_ends() {
        let file = b"FHS|^~\\&|X\r\nBHS|^~\\&\r\nMSH|^~\\&|A\r\nPID|1\r\n\r\nMSH|^~\\&|B\nPID|2\rBTS|2\nFTS|1\n";
        let pieces = split(file);
        assert_eq!(pieces.len(), 2);
        assert_eq!(
            pieces[0],
            Piece {
                line: 3,
                text: b"MSH|^~\\&|A\rPID|1\r".to_vec()
            }
        );
        assert_eq!(pieces[1].line, 6);
        assert_eq!(pieces[1].text, b"MSH|^~\\&|B\rPID|2\r".to_vec());
    }

    #[test]
    fn framing_bytes_and_leading_junk() {
        let pieces = split(b"hello\n\x0bMSH|^~\\&|A\rPID|1\x1c\r");
        assert_eq!(pieces.len(), 2);
        assert_eq!(
            pieces[0],
            Piece {
                line: 1,
                text: b"hello\r".to_vec()
            }
        );
        assert_eq!(pieces[1].text, b"MSH|^~\\&|A\rPID|1\r".to_vec());
        assert!(split(b"").is_empty());
        assert!(split(b"\n\n\r").is_empty());
    }
}
